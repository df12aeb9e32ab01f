/**
 * The web inspector (GET /inspector): sign in with a tenant and a key, then the tenant's services that key may
 * read, live. Built on the browser client: the bundle imports it from the server's /client.js (one copy).
 *
 * The key comes from the form or the URL fragment (`#tenant=<t>&key=<k>`), which browsers never send to the
 * server; it is removed from the address bar at once and kept nowhere but in the client's connection.
 */
import { AuthCredentials, Client } from '../browser.js';
import { describeError } from './format.js';
import { ServiceView } from './service-view.js';
import { followTraffic } from './traffic.js';

const TICK_MS = 1000;

function byId<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (e === null) throw new Error(`the page has no #${id}`);
  return e as T;
}

/** tenant and key from the fragment, if both are there; the fragment is cleared either way. */
function fromFragment(): { tenant: string; key: string } | undefined {
  if (location.hash.length <= 1) return undefined;
  const params = new URLSearchParams(location.hash.slice(1));
  history.replaceState(null, '', location.pathname + location.search);
  const tenant = params.get('tenant');
  const key = params.get('key');
  return tenant && key ? { tenant, key } : undefined;
}

function socketUrl(): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
}

/**
 * One sign-in at a time, and none once signed in: a second Enter or click while the first connected (or a form
 * submitted beside a fragment's key) opened a second client, with a second copy of every panel, every row and
 * its data-variable hook.
 */
let signing: 'idle' | 'busy' | 'done' = 'idle';

async function signIn(tenant: string, key: string): Promise<void> {
  if (signing !== 'idle') return;
  signing = 'busy';
  const error = byId('signin-error');
  error.textContent = '';
  let client: Client;
  try {
    client = await Client.initialize(socketUrl(), tenant, AuthCredentials.apiKey(key), { mode: 'remote' });
  } catch (err) {
    error.textContent = describeError(err);
    signing = 'idle';
    return;
  }
  signing = 'done';
  byId('signin').hidden = true;
  byId('tenant-name').textContent = tenant;
  byId('main').hidden = false;
  await showServices(client, tenant);
}

/** The services the key may read (a Query), each a panel; the first few open (subscribed) at once. */
async function showServices(client: Client, tenant: string): Promise<void> {
  const list = byId('services');
  const views: ServiceView[] = [];
  const seen = new Set<string>();
  try {
    for await (const page of client.query({ tenant })) {
      for (const s of page.services) {
        if (seen.has(s.service)) continue; // a large service continues on the next page
        seen.add(s.service);
        const view = new ServiceView(client, tenant, s.service, s.writable);
        views.push(view);
        list.append(view.root);
        if (views.length <= 8) view.root.open = true;
      }
    }
  } catch (err) {
    byId('services-error').textContent = describeError(err);
  }
  if (views.length === 0) byId('services-error').textContent ||= 'This key may read no service of this tenant.';
  setInterval(() => views.forEach((v) => v.tick()), TICK_MS);
}

function start(): void {
  followTraffic(byId('traffic-figures'));
  const form = byId<HTMLFormElement>('signin');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    void signIn(String(data.get('tenant') ?? ''), String(data.get('key') ?? ''));
  });
  const given = fromFragment();
  if (given !== undefined) void signIn(given.tenant, given.key);
}

start();
