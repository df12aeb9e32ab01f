/**
 * A numeric variable's recent values as a small SVG polyline: the last SAMPLES values it changed to. The points
 * are computed here (pure, tested in Node); the view only sets the attribute.
 */

export const SAMPLES = 60;

/** A bounded history of one variable's values. */
export class History {
  private readonly values: number[] = [];

  push(value: number): void {
    this.values.push(value);
    if (this.values.length > SAMPLES) this.values.shift();
  }

  get length(): number {
    return this.values.length;
  }

  /** The polyline's `points` in a `width` × `height` box (y grows downwards); a flat line when all are equal. */
  points(width: number, height: number): string {
    const n = this.values.length;
    if (n === 0) return '';
    let min = Infinity;
    let max = -Infinity;
    for (const v of this.values) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const span = max - min;
    const step = n > 1 ? width / (SAMPLES - 1) : 0;
    const x0 = width - step * (n - 1);
    return this.values
      .map((v, i) => {
        const y = span === 0 ? height / 2 : height - ((v - min) / span) * height;
        return `${(x0 + i * step).toFixed(1)},${y.toFixed(1)}`;
      })
      .join(' ');
  }
}
