// Names from a peer are hostile: the same checks as fileshare/names.py check_relative_path,
// so a name the CLI would refuse is refused here too (the vectors list both kinds).

export const MAX_COMPONENT_BYTES = 255;
export const MAX_PATH_BYTES = 4096;
export const MAX_COMPONENTS = 64;

const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
const DRIVE = /^[A-Za-z]:/;
const LONE_SURROGATE = /\p{Surrogate}/u;
const encoder = new TextEncoder();

export class UnsafeName extends Error {
  /** @param {string} problem */
  constructor(problem) {
    super(`unsafe name: ${problem}`);
    this.problem = problem;
  }
}

/** Accept a peer's "/"-separated relative path only if it stays inside the chosen folder.
 * @param {string} name */
export function checkRelativePath(name) {
  if (!name) throw new UnsafeName("empty");
  if (CONTROL.test(name)) throw new UnsafeName("contains a control character");
  if (LONE_SURROGATE.test(name)) throw new UnsafeName("not valid Unicode (lone surrogate)");
  if (name.startsWith("/")) throw new UnsafeName("absolute path");
  if (name.includes("\\")) throw new UnsafeName("contains a backslash");
  if (DRIVE.test(name)) throw new UnsafeName("starts with a drive letter");
  if (encoder.encode(name).length > MAX_PATH_BYTES) {
    throw new UnsafeName(`path longer than ${MAX_PATH_BYTES} bytes`);
  }
  const parts = name.split("/");
  if (parts.length > MAX_COMPONENTS) throw new UnsafeName(`more than ${MAX_COMPONENTS} components`);
  for (const part of parts) {
    if (!part) throw new UnsafeName("empty component");
    if (part === "." || part === "..") throw new UnsafeName(`'${part}' component`);
    if (encoder.encode(part).length > MAX_COMPONENT_BYTES) {
      throw new UnsafeName(`component longer than ${MAX_COMPONENT_BYTES} bytes`);
    }
  }
  return parts;
}
