"""Dockerfiles and ``.dockerignore`` files: text in, values out; nothing here touches a file.

``parse_dockerfile`` turns the text into stages of ``Instruction`` values and
checks what can be checked without a build: the keyword, the flags, the
number and form of the arguments. What depends on the build (``$VAR``
substitution, which needs the ENV and ARG values of the moment) is done by
the small functions at the end (``words``, ``key_values``, ``expand``), which
the builder calls step by step.

Rules (moby/buildkit ``frontend/dockerfile/parser`` and ``shell``):

1. Parser directives (``# escape=`` and ``# syntax=``) are only read at the very
   top, before any comment, blank line or instruction; ``escape`` is ``\\`` or
   a backtick. Other directives are comments.
2. A line ending in the escape character (trailing blanks allowed) continues
   on the next one; comment lines and blank lines inside a continuation are
   dropped. Continuation lines keep their leading blanks. An instruction's
   line number is that of its first line.
3. RUN, CMD, ENTRYPOINT (and SHELL, which must) take the exec form when their
   argument is a JSON array of strings, else the shell form (the whole text).
4. Substitution (``$VAR ${VAR} ${VAR:-default} ${VAR:+alt}``, also ``-``, ``+``,
   ``:?``, ``?``) happens in the instructions Docker substitutes (``SUBSTITUTED``),
   never in RUN/CMD/ENTRYPOINT, whose shell does it. Single quotes keep text
   literal; the escape character and double quotes work as in Docker's lexer.
5. Every error is a ``DockerfileError`` whose message starts with
   ``Dockerfile:<line>:`` and says what is wrong.

SPEC: heredocs (``RUN <<EOF``) and ``RUN --mount`` are BuildKit's; they are
refused with a message saying so, not misread as shell text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import RemoteProtocolError

INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})
# The instructions whose arguments get $VAR substitution (rule 4; moby's replaceEnvAllowed).
SUBSTITUTED = frozenset({"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
                         "VOLUME", "WORKDIR"})
_FLAGS = {
    "FROM": {"platform"},
    "COPY": {"from", "chown", "chmod"},
    "ADD": {"chown", "chmod"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}
_EXEC_FORM = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL"})
_NOT_IN_ONBUILD = frozenset({"ONBUILD", "FROM", "MAINTAINER"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
_FLAG = re.compile(r"--([a-zA-Z][a-zA-Z0-9-]*)(?:=(\S*))?(?:\s+|$)")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class DockerfileError(RemoteProtocolError):
    """A Dockerfile (or a substitution in it) is malformed; ``line`` is where, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"Dockerfile:{line}: {message}" if line is not None else message)


@dataclass(frozen=True)
class Instruction:
    """One instruction, as written (continuations joined, flags taken apart).

    Attributes:
        keyword: upper case: ``RUN``.
        line: the line it starts on (1-based).
        text: the instruction as written, on one line: what ``Step N/M :`` prints.
        args: what follows the keyword and its flags, raw (quotes and ``$`` kept).
        flags: ``--from=build`` -> ``{"from": "build"}`` (a flag without value: "").
        exec_form: the JSON array of an exec-form RUN/CMD/ENTRYPOINT/SHELL (also COPY/ADD/VOLUME), else None.
        trigger: for ONBUILD, the instruction it records.
    """

    keyword: str
    line: int
    text: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)
    exec_form: tuple[str, ...] | None = None
    trigger: Instruction | None = None


@dataclass(frozen=True)
class Stage:
    """``FROM base [AS name]`` and the instructions up to the next FROM."""

    index: int
    base: str                      # raw: may hold $VARs of the ARGs before the first FROM
    name: str | None
    source: Instruction            # the FROM itself
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True)
class Dockerfile:
    escape: str
    meta_args: tuple[Instruction, ...]     # the ARGs before the first FROM
    stages: tuple[Stage, ...]

    def stage_index(self, target: str) -> int:
        """The index of the stage named ``target`` (``--target``).

        Raises:
            DockerfileError: no stage has that name.
        """
        for stage in self.stages:
            if stage.name == target.lower():
                return stage.index
        raise DockerfileError(f"target stage {target!r} could not be found")


# ---------------------------------------------------------------- parsing


def parse_dockerfile(text: str) -> Dockerfile:
    """A Dockerfile's text -> its stages (module docstring, rules 1-3 and 5).

    Raises:
        DockerfileError: the message starts with ``Dockerfile:<line>:``.
    """
    lines = text.splitlines()
    escape = "\\"
    i = 0
    seen: set[str] = set()
    while i < len(lines):                  # rule 1
        m = _DIRECTIVE.match(lines[i])
        if not m:
            break
        name, value = m.group(1).lower(), m.group(2)
        if name in ("escape", "syntax"):
            if name in seen:
                raise DockerfileError(f"only one {name} parser directive can be used", i + 1)
            seen.add(name)
            if name == "escape":
                if value not in ("\\", "`"):
                    raise DockerfileError(f"invalid escape token {value!r} does not match ` or \\", i + 1)
                escape = value
        i += 1
    meta_args: list[Instruction] = []
    stages: list[Stage] = []
    current: list[Instruction] = []
    for number, logical in _logical_lines(lines, i, escape):
        inst = parse_instruction(logical, number, escape=escape)
        if inst.keyword == "FROM":
            if stages or current:
                _close_stage(stages, current)
            stages.append(_stage_of(inst, len(stages), escape))
            current = []
        elif not stages:
            if inst.keyword != "ARG":
                raise DockerfileError(f"{inst.keyword} before the first FROM: only ARG may come first "
                                      "(no build stage in current context)", number)
            meta_args.append(inst)
        else:
            current.append(inst)
    if not stages:
        raise DockerfileError("the Dockerfile has no FROM instruction" if meta_args
                              else "the Dockerfile has no instructions")
    _close_stage(stages, current)
    names: set[str] = set()
    for stage in stages:
        if stage.name in names:
            raise DockerfileError(f"duplicate stage name {stage.name!r}", stage.source.line)
        if stage.name:
            names.add(stage.name)
    return Dockerfile(escape, tuple(meta_args), tuple(stages))


def _close_stage(stages: list[Stage], current: list[Instruction]) -> None:
    last = stages[-1]
    stages[-1] = Stage(last.index, last.base, last.name, last.source, tuple(current))


def _stage_of(inst: Instruction, index: int, escape: str) -> Stage:
    raw = split_words(inst.args, escape)
    if len(raw) == 1:
        return Stage(index, raw[0], None, inst, ())
    if len(raw) == 3 and raw[1].lower() == "as":
        name = raw[2].lower()
        if not _STAGE_NAME.match(name):
            raise DockerfileError(f"invalid name for build stage: {raw[2]!r}, name can't start with a number "
                                  "or contain symbols", inst.line)
        return Stage(index, raw[0], name, inst, ())
    raise DockerfileError("FROM requires either one or three arguments (IMAGE [AS NAME])", inst.line)


def _logical_lines(lines: list[str], start: int, escape: str):
    """(first line number, text) of each instruction: comments dropped, continuations joined (rule 2)."""
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    i = start
    while i < len(lines):
        line = lines[i].lstrip()
        number = i + 1
        i += 1
        if not line or line.startswith("#"):
            continue
        text = ""
        while True:
            m = continuation.search(line)
            if not m:
                text += line
                break
            text += line[:m.start()]
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1
            if i >= len(lines):
                break
            line = lines[i]
            i += 1
        yield number, text


def parse_instruction(text: str, line: int, *, escape: str = "\\") -> Instruction:
    """One logical line -> an ``Instruction``, its arguments checked.

    Raises:
        DockerfileError: unknown instruction, unknown flag, wrong arguments.
    """
    m = re.match(r"\s*(\S+)\s*(.*)$", text, re.DOTALL)
    if not m:
        raise DockerfileError("empty instruction", line)
    keyword, rest = m.group(1).upper(), m.group(2).strip()
    if keyword not in INSTRUCTIONS:
        raise DockerfileError(f"unknown instruction: {m.group(1)}", line)
    flags: dict[str, str] = {}
    if keyword != "ONBUILD":
        while rest.startswith("--"):
            fm = _FLAG.match(rest)
            if not fm:
                raise DockerfileError(f"{keyword}: malformed flag in {rest.split()[0]!r}", line)
            name, value = fm.group(1), fm.group(2)
            allowed = _FLAGS.get(keyword, set())
            if name not in allowed:
                if keyword == "RUN":
                    raise DockerfileError(f"RUN --{name} is a BuildKit feature corral does not support", line)
                raise DockerfileError(f"unknown flag: --{name} for {keyword}", line)
            if name in flags:
                raise DockerfileError(f"{keyword}: duplicate flag --{name}", line)
            flags[name] = value if value is not None else ""
            rest = rest[fm.end():]
    exec_form = _json_array(rest) if keyword in _EXEC_FORM | {"COPY", "ADD", "VOLUME"} else None
    inst = Instruction(keyword, line, " ".join(text.split()) if keyword not in _EXEC_FORM else text.strip(),
                       rest, flags, exec_form)
    _check(inst, escape)
    if keyword == "ONBUILD":
        trigger = parse_instruction(rest, line, escape=escape)
        if trigger.keyword in _NOT_IN_ONBUILD:
            raise DockerfileError(f"{trigger.keyword} isn't allowed as an ONBUILD trigger", line)
        inst = Instruction(keyword, line, inst.text, rest, flags, None, trigger)
    return inst


def _json_array(text: str) -> tuple[str, ...] | None:
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None                    # not JSON: the shell form (rule 3)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _check(inst: Instruction, escape: str) -> None:
    """Argument counts and forms that need no build context."""
    k, rest, line = inst.keyword, inst.args, inst.line
    if rest.startswith("<<") and k in ("RUN", "COPY", "ADD"):
        raise DockerfileError(f"{k} with a heredoc is a BuildKit feature corral does not support", line)
    if k in ("RUN", "ENTRYPOINT", "CMD", "SHELL") and not rest:
        raise DockerfileError(f"{k} requires at least one argument", line)
    if k == "SHELL" and not inst.exec_form:
        raise DockerfileError("SHELL requires the arguments to be in JSON form", line)
    if k in ("COPY", "ADD"):
        count = len(inst.exec_form) if inst.exec_form is not None else len(split_words(rest, escape))
        if count < 2:
            raise DockerfileError(f"{k} requires at least two arguments, but only {count} was provided. "
                                  "Destination could not be determined", line)
    elif k in ("ENV", "LABEL"):
        if not rest:
            raise DockerfileError(f"{k} requires at least one argument", line)
        _raw_pairs(k, rest, line, escape)
    elif k == "ARG":
        raw = split_words(rest, escape)
        if not raw:
            raise DockerfileError("ARG requires at least one argument", line)
        for word in raw:
            name = word.partition("=")[0]
            if not _VAR_NAME.fullmatch(name):
                raise DockerfileError(f"ARG: invalid name {name!r}", line)
    elif k in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER", "EXPOSE", "VOLUME", "FROM", "ONBUILD"):
        if not rest:
            raise DockerfileError(f"{k} requires at least one argument", line)
    elif k == "HEALTHCHECK":
        head = rest.split(None, 1)
        if not head or head[0].upper() not in ("CMD", "NONE"):
            raise DockerfileError("HEALTHCHECK requires CMD followed by a command, or NONE", line)
        if head[0].upper() == "NONE" and (len(head) > 1 or inst.flags):
            raise DockerfileError("HEALTHCHECK NONE takes no arguments or flags", line)
        if head[0].upper() == "CMD" and len(head) < 2:
            raise DockerfileError("HEALTHCHECK CMD requires a command", line)
        if "retries" in inst.flags and not inst.flags["retries"].isdigit():
            raise DockerfileError(f"HEALTHCHECK --retries: {inst.flags['retries']!r} is not a number", line)
        healthcheck(inst)              # durations checked here, with the line


def _raw_pairs(keyword: str, rest: str, line: int, escape: str) -> list[tuple[str, str]]:
    raw = split_words(rest, escape)
    if "=" not in raw[0]:
        # The legacy form: ``ENV KEY value with spaces``; one pair.
        if len(raw) < 2:
            raise DockerfileError(f"{keyword} {raw[0]} must have two arguments (KEY VALUE) or be KEY=VALUE", line)
        return [(raw[0], rest[len(raw[0]):].strip())]
    pairs = []
    for word in raw:
        key, sep, value = word.partition("=")
        if not sep:
            raise DockerfileError(f"{keyword}: {word!r} is not KEY=VALUE (mixing forms?)", line)
        if not key:
            raise DockerfileError(f"{keyword} names can not be blank", line)
        pairs.append((key, value))
    return pairs


# ---------------------------------------------------------------- words and substitution


def split_words(text: str, escape: str = "\\") -> list[str]:
    """Split at blanks outside quotes, keeping quotes and escapes (moby's ``parseWords``)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if c == escape and i + 1 < len(text):
            word.append(text[i:i + 2])
            i += 2
            continue
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c.isspace():
            if word:
                words.append("".join(word))
                word = []
            i += 1
            continue
        word.append(c)
        i += 1
    if word:
        words.append("".join(word))
    return words


class _Lexer:
    """Quote removal and ``$`` substitution over one word (rule 4); moby's ``shell.Lex``."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str, *, quotes: bool = True) -> None:
        self.text, self.env, self.escape, self.i = text, env, escape, 0
        self.quotes = quotes           # False for the strings of a JSON form: only $ and escaped $ count

    def word(self, stop: str = "") -> str:
        text, out = self.text, []
        while self.i < len(text):
            c = text[self.i]
            if stop and c in stop:
                break
            if not self.quotes and c != "$":
                if c == self.escape and text.startswith("$", self.i + 1):
                    c = "$"
                    self.i += 1
                out.append(c)
                self.i += 1
            elif c == self.escape:
                self.i += 1
                if self.i < len(text):
                    out.append(text[self.i])
                    self.i += 1
                else:
                    out.append(c)
            elif c == "'":
                end = text.find("'", self.i + 1)
                if end < 0:
                    raise DockerfileError("unexpected end of statement while looking for matching single-quote")
                out.append(text[self.i + 1:end])
                self.i = end + 1
            elif c == '"':
                out.append(self._double_quoted())
            elif c == "$":
                out.append(self._dollar())
            else:
                out.append(c)
                self.i += 1
        return "".join(out)

    def _double_quoted(self) -> str:
        text, out = self.text, []
        self.i += 1
        while self.i < len(text):
            c = text[self.i]
            if c == '"':
                self.i += 1
                return "".join(out)
            if c == self.escape and self.i + 1 < len(text):
                nxt = text[self.i + 1]
                out.append(nxt if nxt in ('"', "$", self.escape) else c + nxt)
                self.i += 2
            elif c == "$":
                out.append(self._dollar())
            else:
                out.append(c)
                self.i += 1
        raise DockerfileError("unexpected end of statement while looking for matching double-quote")

    def _dollar(self) -> str:
        text = self.text
        self.i += 1
        if self.i < len(text) and text[self.i] == "{":
            self.i += 1
            m = _VAR_NAME.match(text, self.i)
            if not m:
                raise DockerfileError(f"bad substitution in {text!r}")
            name = m.group(0)
            self.i = m.end()
            if self.i >= len(text):
                raise DockerfileError(f"missing '}}' in {text!r}")
            if text[self.i] == "}":
                self.i += 1
                return self.env.get(name, "")
            if text.startswith((":-", ":+", ":?"), self.i):
                modifier = text[self.i:self.i + 2]
            elif text[self.i] in "-+?":
                modifier = text[self.i]
            else:
                raise DockerfileError(f"unsupported modifier ({text[self.i]}) in substitution {text!r}")
            self.i += len(modifier)
            word = self.word(stop="}")
            if self.i >= len(text):
                raise DockerfileError(f"missing '}}' in {text!r}")
            self.i += 1
            is_set, value = name in self.env, self.env.get(name, "")
            present = bool(value) if modifier.startswith(":") else is_set
            if modifier.endswith("-"):
                return value if present else word
            if modifier.endswith("+"):
                return word if present else ""
            if not present:
                raise DockerfileError(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        m = _VAR_NAME.match(text, self.i)
        if not m:
            return "$"                     # a lone $, or $ before something that is no name
        self.i = m.end()
        return self.env.get(m.group(0), "")


def expand(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """One word with quotes removed and ``$VAR`` forms substituted (rule 4).

    Raises:
        DockerfileError: an unclosed quote or ``${``, a bad modifier, a failed ``${VAR?msg}``
            (without a line: the caller adds the instruction's).
    """
    return _Lexer(word, env, escape).word()


def _with_line(inst: Instruction, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except DockerfileError as exc:
        if exc.line is not None:
            raise
        raise DockerfileError(f"{inst.keyword}: {exc.reason}", inst.line) from None


def words(inst: Instruction, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """An instruction's arguments as words, substituted if its keyword is in ``SUBSTITUTED``.

    The exec (JSON) form of COPY/ADD/VOLUME is taken as is, substituted too.
    """
    subst = env if inst.keyword in SUBSTITUTED else {}
    if inst.exec_form is not None:
        return [_with_line(inst, _expand_plain, w, subst, escape) for w in inst.exec_form]
    return [_with_line(inst, expand, w, subst, escape=escape) for w in split_words(inst.args, escape)]


def _expand_plain(word: str, env: Mapping[str, str], escape: str) -> str:
    # A JSON string's quotes are gone already; only $ forms (and the escape before $) matter.
    return _Lexer(word, env, escape, quotes=False).word()


def key_values(inst: Instruction, env: Mapping[str, str], *, escape: str = "\\") -> list[tuple[str, str]]:
    """ENV/LABEL pairs (``k=v k2="v 2"`` or the legacy ``k value``), each side substituted.

    ENV substitutes with the values before the instruction: ``ENV A=1 B=$A`` sees the old A (Docker).
    """
    pairs = _raw_pairs(inst.keyword, inst.args, inst.line, escape)
    return [(_with_line(inst, expand, k, env, escape=escape), _with_line(inst, expand, v, env, escape=escape))
            for k, v in pairs]


def arg_definitions(inst: Instruction, env: Mapping[str, str], *, escape: str = "\\") -> list[tuple[str, str | None]]:
    """``ARG name[=default]...`` -> ``[(name, default or None)]``, defaults substituted."""
    out: list[tuple[str, str | None]] = []
    for word in split_words(inst.args, escape):
        name, sep, default = word.partition("=")
        out.append((name, _with_line(inst, expand, default, env, escape=escape) if sep else None))
    return out


def command(inst: Instruction, shell: tuple[str, ...]) -> tuple[str, ...]:
    """The argv of RUN/CMD/ENTRYPOINT: the exec form, or ``shell + (text,)``."""
    if inst.exec_form is not None:
        return inst.exec_form
    return (*shell, inst.args)


def healthcheck(inst: Instruction) -> dict:
    """HEALTHCHECK -> Docker's ``Config.Healthcheck`` (durations in ns; what is not given is 0).

    Raises:
        DockerfileError: a malformed duration.
    """
    from .units import parse_duration_ns

    head = inst.args.split(None, 1)
    if head[0].upper() == "NONE":
        return {"Test": ["NONE"]}
    rest = head[1].strip()
    exec_form = _json_array(rest)
    doc: dict = {"Test": ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", rest]}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                      ("start-interval", "StartInterval")):
        if flag in inst.flags:
            try:
                doc[key] = parse_duration_ns(inst.flags[flag], where=f"HEALTHCHECK --{flag}")
            except ValueError as exc:
                raise DockerfileError(str(exc), inst.line) from None
    if "retries" in inst.flags:
        doc["Retries"] = int(inst.flags["retries"])
    return doc


# ---------------------------------------------------------------- .dockerignore


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool                # a "!" line: matching paths are included again
    regex: re.Pattern[str]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax plus ``**`` (any number of directories), as moby's patternmatcher."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise DockerfileError(f".dockerignore: syntax error in pattern {pattern!r}: unclosed [")
            body = pattern[i + 1:end]
            if body.startswith("^"):
                body = "!" + body[1:]
            out.append("[" + ("^" + re.escape(body[1:]) if body.startswith("!") else re.escape(body)) + "]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _clean(path: str) -> str:
    parts: list[str] = []
    for p in path.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return "/".join(parts)


class DockerIgnore:
    """A ``.dockerignore``: which context paths are left out of the build.

    A path is excluded when the last pattern matching it, or one of its parent
    directories, is not a ``!`` pattern (moby's ``MatchesOrParentMatches``).
    """

    def __init__(self, patterns: list[_Pattern]) -> None:
        self.patterns = patterns
        self.has_exclusions = any(p.exclusion for p in patterns)

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (relative to the context, ``/``-separated) is left out."""
        if not self.patterns:
            return False                    # the common case, asked once per path of a context
        path = _clean(path)
        if not path:
            return False
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for p in self.patterns:
            if any(p.regex.fullmatch(prefix) for prefix in prefixes):
                result = not p.exclusion
        return result


def parse_dockerignore(text: str) -> DockerIgnore:
    """``.dockerignore`` text -> a matcher: blank lines and ``#`` lines skipped, ``!`` re-includes,
    patterns cleaned (leading ``/`` and ``./`` dropped).

    Raises:
        DockerfileError: a pattern that is not valid (an unclosed ``[``).
    """
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        cleaned = _clean(line)
        if not cleaned:
            continue
        patterns.append(_Pattern(cleaned, exclusion, _pattern_regex(cleaned)))
    return DockerIgnore(patterns)


__all__ = [
    "INSTRUCTIONS", "SUBSTITUTED", "DockerIgnore", "Dockerfile", "DockerfileError", "Instruction", "Stage",
    "arg_definitions", "command", "expand", "healthcheck", "key_values", "parse_dockerfile", "parse_dockerignore",
    "parse_instruction", "split_words", "words",
]
