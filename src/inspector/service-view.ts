import type { Client } from '../client/client.js';
import type { VirtualVariableFile } from '../client/virtual-variable-file.js';
import type { VariableMetadata } from '../core/variable-metadata.js';
import { typeName } from '../core/variable-type.js';
import { ago, describeError, formatCell, numericOf, parseValue } from './format.js';
import { History } from './sparkline.js';

/**
 * One service in the inspector: a table of its variables, live. Opening the panel subscribes (the browser
 * client's getVirtualServiceFile), closing it lets the subscription go: a tenant with many services costs only
 * what is open. Changes mark rows dirty; rows are redrawn once per animation frame, whatever the write rate.
 *
 * The markup keeps the spec's hooks: a row `data-variable="<service>/<name>"`, its value cell `data-value`, and,
 * where the key may write, `<input data-edit="<service>/<name>">` committing on Enter. Every value goes in
 * through textContent, never as markup.
 */

const SPARK_W = 120;
/** From this many rows the table is laid out fixed (table.many in inspector-page.ts): see there why. */
const MANY_ROWS = 100;
const SPARK_H = 20;
const SVG = 'http://www.w3.org/2000/svg';

interface Row {
  readonly meta: VariableMetadata;
  readonly tr: HTMLTableRowElement;
  readonly value: HTMLElement;
  readonly version: HTMLElement;
  readonly changed: HTMLElement;
  readonly staleness: HTMLElement;
  readonly line: SVGPolylineElement;
  readonly note: HTMLElement;
  readonly history: History;
  changedAt: number | undefined;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * Sets a cell's text only when it changes. Every write of textContent, even of the same text, replaces the
 * cell's text node and makes the browser lay the table out again: with 5,000 rows, the once-a-second tick
 * rewrote every row's "current" and held the page for a third of a second each time.
 */
function setText(e: HTMLElement, text: string): void {
  if (e.textContent !== text) e.textContent = text;
}

export class ServiceView {
  readonly root: HTMLDetailsElement;
  private readonly table: HTMLTableElement;
  private readonly body: HTMLTableSectionElement;
  private readonly status: HTMLElement;
  private readonly rows = new Map<string, Row>();
  private readonly dirty = new Set<string>();
  private vf: VirtualVariableFile | undefined;
  private frame = 0;
  private generation = 0;

  constructor(
    private readonly client: Client,
    private readonly tenant: string,
    readonly service: string,
    private readonly writable: boolean,
  ) {
    this.root = el('details', { 'data-service': service });
    const summary = el('summary');
    summary.append(el('span', { class: 'service-name' }, service), el('span', { class: 'badge' }, writable ? 'read · write' : 'read only'));
    this.status = el('span', { class: 'status' });
    summary.append(this.status);
    const table = (this.table = el('table'));
    const head = el('tr');
    for (const h of ['variable', 'type', 'value', 'recent', 'version', 'changed', 'staleness', writable ? 'edit' : '']) head.append(el('th', {}, h));
    table.append(el('thead'), (this.body = el('tbody')));
    table.tHead!.append(head);
    this.root.append(summary, table);
    this.root.addEventListener('toggle', () => void (this.root.open ? this.open() : this.close()));
  }

  /** Subscribes and follows the service's changes until closed. */
  private async open(): Promise<void> {
    const generation = ++this.generation;
    this.status.textContent = 'connecting…';
    let vf: VirtualVariableFile;
    try {
      vf = await this.client.getVirtualServiceFile(this.tenant, this.service);
    } catch (err) {
      this.status.textContent = describeError(err);
      return;
    }
    if (generation !== this.generation) return void vf.close(); // closed meanwhile
    this.vf = vf;
    this.status.textContent = '';
    this.layout();
    for (const row of this.rows.values()) this.draw(row);
    void this.follow(vf, generation);
  }

  private async follow(vf: VirtualVariableFile, generation: number): Promise<void> {
    try {
      for await (const ev of vf.changes()) {
        if (generation !== this.generation) break;
        const now = Date.now();
        if (vf.variables().length !== this.rows.size || ev.changedVariables.some((n) => !this.rows.has(n))) this.layout();
        for (const name of ev.changedVariables) {
          const row = this.rows.get(name);
          if (row === undefined) continue;
          row.changedAt = now;
          const n = numericOf(this.read(row));
          if (n !== undefined) row.history.push(n);
          this.dirty.add(name);
        }
        this.schedule();
      }
    } catch (err) {
      if (generation === this.generation) this.status.textContent = describeError(err);
    }
  }

  private close(): void {
    this.generation++;
    const vf = this.vf;
    this.vf = undefined;
    void vf?.close();
  }

  /** Rows for the variables the service has now, in offset order (a registration or removal changes them). */
  private layout(): void {
    const vf = this.vf;
    if (vf === undefined) return;
    const metas = vf.variables().sort((a, b) => a.offset - b.offset);
    const names = new Set(metas.map((m) => m.name));
    for (const [name, row] of this.rows) {
      if (!names.has(name)) {
        row.tr.remove();
        this.rows.delete(name);
      }
    }
    for (const meta of metas) {
      if (!this.rows.has(meta.name)) this.rows.set(meta.name, this.row(meta));
      this.body.append(this.rows.get(meta.name)!.tr); // in order: append moves an existing row
    }
    this.table.classList.toggle('many', this.rows.size >= MANY_ROWS);
  }

  private row(meta: VariableMetadata): Row {
    const id = `${this.service}/${meta.name}`;
    const tr = el('tr', { 'data-variable': id });
    const value = el('td', { 'data-value': '', class: 'value' });
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('width', String(SPARK_W));
    svg.setAttribute('height', String(SPARK_H));
    const line = document.createElementNS(SVG, 'polyline');
    svg.append(line);
    const spark = el('td', { class: 'spark' });
    spark.append(svg);
    const row: Row = {
      meta,
      tr,
      value,
      version: el('td', { class: 'num' }),
      changed: el('td', { class: 'when' }, '—'),
      staleness: el('td', { class: 'num' }),
      line,
      note: el('span', { class: 'note' }),
      history: new History(),
      changedAt: undefined,
    };
    const editCell = el('td');
    if (this.writable) {
      const input = el('input', { 'data-edit': id, 'aria-label': `new value of ${id}`, spellcheck: 'false' });
      input.addEventListener('keydown', (e) => {
        if (e.key === 'Enter') void this.commit(row, input);
      });
      editCell.append(input, row.note);
    }
    tr.append(el('td', { class: 'name' }, meta.name), el('td', { class: 'type' }, typeName(meta.typeId)), value, spark, row.version, row.changed, row.staleness, editCell);
    const n = numericOf(this.read(row));
    if (n !== undefined) row.history.push(n);
    return row;
  }

  private read(row: Row): unknown {
    try {
      return this.vf?.get(row.meta.name);
    } catch {
      return undefined; // removed meanwhile: the next layout drops the row
    }
  }

  private async commit(row: Row, input: HTMLInputElement): Promise<void> {
    const vf = this.vf;
    if (vf === undefined) return;
    row.note.textContent = '';
    try {
      vf.set(row.meta.name, parseValue(input.value, row.meta.typeId, this.read(row)) as never);
      await vf.flush();
      input.value = '';
      row.note.textContent = '✓';
    } catch (err) {
      row.note.textContent = describeError(err);
    }
    row.changedAt = Date.now();
    this.dirty.add(row.meta.name);
    this.schedule();
  }

  private schedule(): void {
    if (this.frame !== 0) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      for (const name of this.dirty) {
        const row = this.rows.get(name);
        if (row !== undefined) this.draw(row);
      }
      this.dirty.clear();
    });
  }

  private draw(row: Row): void {
    const vf = this.vf;
    if (vf === undefined) return;
    setText(row.value, formatCell(this.read(row)));
    try {
      setText(row.version, String(vf.handle(row.meta.name).version()));
    } catch {
      setText(row.version, '—');
    }
    row.line.setAttribute('points', row.history.points(SPARK_W, SPARK_H));
    this.tick(row);
  }

  /** What changes with time alone: "changed … ago" and staleness. Called every second for open panels. */
  tick(row?: Row): void {
    const rows = row === undefined ? this.rows.values() : [row];
    const now = Date.now();
    const vf = this.vf;
    for (const r of rows) {
      if (r.changedAt !== undefined) setText(r.changed, ago(now - r.changedAt));
      if (vf === undefined) continue;
      try {
        const s = vf.staleness(r.meta.name);
        setText(r.staleness, Number(s.versionsBehind) === 0 ? 'current' : `${s.versionsBehind} behind, ${Math.round(s.ms)} ms`);
      } catch {
        setText(r.staleness, '—');
      }
    }
  }
}
