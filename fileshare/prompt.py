"""The receiver's code prompt: readline, so Tab completes the code's words (and a word that is
not one is still caught by parse_code's spelling check when Enter is pressed)."""

from __future__ import annotations

import sys

from fileshare.code import complete

PROMPT = "Code: "


def ask_code() -> str:
    """Read the code from the terminal; nothing of it goes to the shell's history."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):  # input() uses readline only then
        print(PROMPT, end="", file=sys.stderr, flush=True)
        return sys.stdin.readline().strip()
    import readline

    def completer(_word: str, state: int) -> str | None:
        line = readline.get_line_buffer()[: readline.get_endidx()]
        found = complete(line)
        return found[state] if state < len(found) else None

    readline.set_completer(completer)
    readline.set_completer_delims(" -")
    readline.parse_and_bind("tab: complete")
    if "libedit" in (readline.__doc__ or ""):  # macOS's readline speaks another language
        readline.parse_and_bind("bind ^I rl_complete")
    try:
        return input(PROMPT).strip()
    except EOFError:
        return ""
    finally:
        readline.clear_history()
