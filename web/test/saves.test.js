// Which received files the page offers for saving (src/saves.js).

import assert from "node:assert/strict";
import { test } from "node:test";
import { Saves } from "../src/saves.js";

test("a file is saveable once verified, and not before", () => {
  const saves = new Saves();
  assert.equal(saves.saveable("f1"), false);
  assert.equal(saves.state("f1"), undefined);
  assert.equal(saves.verified("f1", true), true);
  assert.equal(saves.saveable("f1"), true);
});

test("a damaged file is never saveable", () => {
  const saves = new Saves();
  assert.equal(saves.verified("f1", false), true);
  assert.equal(saves.saveable("f1"), false);
  assert.equal(saves.state("f1"), "damaged");
});

test("a new round verifies again: no Save until the file's verdict comes once more", () => {
  const saves = new Saves();
  saves.verified("f1", true);
  saves.verified("f2", false);
  // The sender restarted: its round announces f1, f2 and a file not verified yet.
  assert.deepEqual(saves.reopened(["f1", "f2", "f3"]), ["f1", "f2"]);
  assert.equal(saves.saveable("f1"), false);
  assert.equal(saves.state("f1"), "verifying");
  assert.equal(saves.state("f3"), undefined); // nothing to show for it yet
  assert.deepEqual(saves.reopened(["f1"]), []); // verifying already: no change
  assert.equal(saves.verified("f1", true), false); // the same verdict: no news
  assert.equal(saves.saveable("f1"), true);
  assert.equal(saves.verified("f2", true), true); // arrived intact this time
  assert.equal(saves.saveable("f2"), true);
});
