// The SHA-256 of a file the page receives, taken as its chunks are written (the CLI's
// fileshare/prefixdigest.py). Reading a finished file back to hash it kept the user waiting
// at the end of every transfer; on one connection chunks arrive in order, so the check reads
// back only what it did not see in order: chunks a resumed file held before this page ran,
// and everything after them.

import { sha256 } from "@noble/hashes/sha2.js";
import { toHex } from "./bytes.js";

const READ_BLOCK = 4 * 1024 * 1024;

export class PrefixDigest {
  constructor() {
    this.hash = sha256.create();
    /** Bytes hashed: the file's first `offset`. */
    this.offset = 0;
  }

  /** `data` was written at `offset`; taken only if it continues the hashed prefix.
   * @param {number} offset @param {Uint8Array} data */
  wrote(offset, data) {
    if (offset !== this.offset) return;
    this.hash.update(data);
    this.offset += data.length;
  }

  /** The whole file's digest (hex), reading the rest through `read` (bytes read into the
   * buffer from a position, 0 at the end). Once only.
   * @param {(into: Uint8Array, at: number) => number} read */
  finish(read) {
    const block = new Uint8Array(READ_BLOCK);
    for (let at = this.offset; ; ) {
      const n = read(block, at);
      if (n <= 0) break;
      this.hash.update(block.subarray(0, n));
      at += n;
    }
    return toHex(this.hash.digest());
  }
}
