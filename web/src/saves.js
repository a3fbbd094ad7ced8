// Which received files the page offers for saving. A file is offered once verified, and not
// while a new round (the sender restarted) verifies it again: the round opens every announced
// file anew, which drops its verified mark (store-worker.js "open"), so a Save click then would
// get nothing (the service worker answers 204) until the file is verified once more.

/** @typedef {"verifying" | "verified" | "damaged"} SaveState */

export class Saves {
  constructor() {
    /** @type {Map<string, SaveState>} */
    this.states = new Map();
    /** Each file's last verdict. @type {Map<string, boolean>} */
    this.verdicts = new Map();
  }

  /** A round announced these files: those listed already are being verified again.
   * @param {string[]} fileIds @returns {string[]} the files listed whose state changed */
  reopened(fileIds) {
    const changed = fileIds.filter((id) => this.states.has(id) && this.states.get(id) !== "verifying");
    for (const id of changed) this.states.set(id, "verifying");
    return changed;
  }

  /** A file's verdict. @param {string} fileId @param {boolean} ok
   * @returns {boolean} whether it is news: the file's first verdict, or another than its last */
  verified(fileId, ok) {
    const before = this.verdicts.get(fileId);
    this.states.set(fileId, ok ? "verified" : "damaged");
    this.verdicts.set(fileId, ok);
    return before !== ok;
  }

  /** @param {string} fileId */
  saveable(fileId) {
    return this.states.get(fileId) === "verified";
  }

  /** @param {string} fileId @returns {SaveState | undefined} */
  state(fileId) {
    return this.states.get(fileId);
  }
}
