// The share code, as fileshare/code.py: `<session number>-<word>-<word>-<word>`. The number
// finds the session on the signaling server; the words are the PAKE secret it never sees.
// The web link form is `https://HOST/#CODE`: the fragment never reaches the server.

import WORDS from "./words.json" with { type: "json" };

export const CODE_WORDS = 3;
const INDEX = new Set(WORDS);
const CODE = /^([0-9]{4,32})[-\s]+([a-z]+(?:[-\s]+[a-z]+)*)$/;

export class BadCode extends Error {}

/** @typedef {{sessionId: string, words: string[]}} ShareCode */

/** @param {ShareCode} code */
export const codeText = (code) => [code.sessionId, ...code.words].join("-");

/** The PAKE password. @param {ShareCode} code */
export const codeSecret = (code) => new TextEncoder().encode(code.words.join("-"));

/** @param {string} sessionId @returns {ShareCode} */
export function newCode(sessionId) {
  const random = crypto.getRandomValues(new Uint8Array(CODE_WORDS));
  return { sessionId, words: Array.from(random, (b) => WORDS[b % WORDS.length]) };
}

/** What a person types (any case, dashes or spaces), or a link whose fragment is the code.
 * @param {string} input @returns {ShareCode} */
export function parseCode(input) {
  let text = input.trim();
  const hash = text.indexOf("#");
  if (hash >= 0) text = decodeURIComponent(text.slice(hash + 1)).trim();
  const match = CODE.exec(text.toLowerCase());
  if (!match) throw new BadCode("a code looks like 48213907-crane-opera-lemon");
  const words = match[2].split(/[-\s]+/);
  const unknown = words.find((w) => !INDEX.has(w));
  if (unknown) throw new BadCode(`not a code word: ${unknown} (check the spelling)`);
  if (words.length !== CODE_WORDS) throw new BadCode(`a code has ${CODE_WORDS} words after the number`);
  return { sessionId: match[1], words };
}
