// Which chunks of a file are held: one bit each (as fileshare/bitmap.py), so a resume request
// or an ack names ranges, and memory is bounded by the announced chunk count.

export class ChunkBitmap {
  /** @param {number} count */
  constructor(count) {
    this.count = count;
    this.bits = new Uint8Array(Math.ceil(count / 8));
    this.held = 0;
  }

  get complete() {
    return this.held === this.count;
  }

  /** @param {number} index */
  has(index) {
    return (this.bits[index >> 3] & (1 << (index & 7))) !== 0;
  }

  /** True if the chunk was new. @param {number} index */
  add(index) {
    if (!(index >= 0 && index < this.count)) throw new RangeError(`chunk ${index} out of range`);
    if (this.has(index)) return false;
    this.bits[index >> 3] |= 1 << (index & 7);
    this.held += 1;
    return true;
  }

  /** The chunks not held, in order. */
  *missing() {
    for (let i = 0; i < this.count; i++) if (!this.has(i)) yield i;
  }

  /** Held chunks as [start, end) ranges. @returns {[number, number][]} */
  ranges() {
    /** @type {[number, number][]} */
    const out = [];
    for (let i = 0; i < this.count; i++) {
      if (!this.has(i)) continue;
      const last = out[out.length - 1];
      if (last && last[1] === i) last[1] = i + 1;
      else out.push([i, i + 1]);
    }
    return out;
  }

  /** What a flush recorded (bits beyond `count` ignored); empty if it does not fit `count`.
   * @param {number} count @param {Uint8Array | null} bits */
  static fromBits(count, bits) {
    const map = new ChunkBitmap(count);
    if (bits && bits.length === map.bits.length) {
      for (let i = 0; i < count; i++) if (bits[i >> 3] & (1 << (i & 7))) map.add(i);
    }
    return map;
  }

  /** @param {number} count @param {[number, number][]} ranges */
  static fromRanges(count, ranges) {
    const map = new ChunkBitmap(count);
    for (const [start, end] of ranges) for (let i = start; i < end; i++) map.add(i);
    return map;
  }
}
