"""The Dockerfile parser, substitution and .dockerignore matching: pure, no daemon."""

from __future__ import annotations

import pytest

from protocols.dockerfile import (
    DockerfileError,
    arg_definitions,
    command,
    expand,
    healthcheck,
    key_values,
    parse_dockerfile,
    parse_dockerignore,
    parse_instruction,
    split_words,
    words,
)


def _one(text: str):
    """The single instruction after ``FROM busybox``."""
    (inst,) = parse_dockerfile("FROM busybox\n" + text).stages[0].instructions
    return inst


def test_every_instruction_is_known_with_its_arguments() -> None:
    df = parse_dockerfile("""\
ARG BASE=busybox
FROM $BASE AS build
RUN echo shell form
RUN ["echo", "exec", "form"]
CMD ["sh"]
ENTRYPOINT /bin/run --fast
ENV A=1
ARG B
WORKDIR /w
USER nobody
EXPOSE 80 53/udp
LABEL a=b
VOLUME ["/v"]
STOPSIGNAL SIGINT
HEALTHCHECK NONE
SHELL ["/bin/bash", "-c"]
ONBUILD RUN echo later
MAINTAINER someone
COPY --from=other --chown=1:2 a b /dst/
ADD --chown=3 x.tar /
""")
    assert [a.keyword for a in df.meta_args] == ["ARG"]
    (stage,) = df.stages
    assert (stage.base, stage.name, stage.source.line) == ("$BASE", "build", 2)
    keywords = [i.keyword for i in stage.instructions]
    assert keywords == ["RUN", "RUN", "CMD", "ENTRYPOINT", "ENV", "ARG", "WORKDIR", "USER", "EXPOSE", "LABEL",
                        "VOLUME", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "ONBUILD", "MAINTAINER", "COPY", "ADD"]
    run_shell, run_exec = stage.instructions[:2]
    assert run_shell.exec_form is None and command(run_shell, ("/bin/sh", "-c")) == ("/bin/sh", "-c",
                                                                                      "echo shell form")
    assert command(run_exec, ("/bin/sh", "-c")) == ("echo", "exec", "form")
    copy = stage.instructions[-2]
    assert copy.flags == {"from": "other", "chown": "1:2"} and words(copy, {}) == ["a", "b", "/dst/"]
    onbuild = stage.instructions[14]
    assert onbuild.trigger is not None and onbuild.trigger.keyword == "RUN" and onbuild.trigger.text == "RUN echo later"
    assert [i.line for i in stage.instructions][:3] == [3, 4, 5]


def test_continuations_comments_and_blank_lines() -> None:
    df = parse_dockerfile("FROM busybox\n"
                          "RUN echo a \\\n"
                          "# a comment inside is dropped\n"
                          "\n"
                          "    b \\  \n"
                          "  c\n"
                          "   # an indented comment\n"
                          "CMD x\n")
    run, cmd = df.stages[0].instructions
    assert run.line == 2 and run.args == "echo a     b   c"
    assert cmd.line == 8
    # A continuation at the end of the file ends the instruction.
    assert _one("RUN echo end \\").args == "echo end"


def test_escape_directive_changes_the_continuation_and_escape_character() -> None:
    df = parse_dockerfile("# escape=`\nFROM busybox\nRUN dir c:\\ `\n  && echo done\nCOPY a`$b /x\n")
    assert df.escape == "`"
    run, copy = df.stages[0].instructions
    assert run.args == "dir c:\\   && echo done"
    assert words(copy, {"b": "B"}, escape=df.escape) == ["a$b", "/x"]
    # Only at the very top: after a comment it is an ordinary comment.
    assert parse_dockerfile("# hello\n# escape=`\nFROM busybox\n").escape == "\\"
    with pytest.raises(DockerfileError, match=r"^Dockerfile:1: invalid escape token"):
        parse_dockerfile("# escape=x\nFROM busybox\n")


def test_substitution_forms() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert expand("$SET ${SET} x${SET}y", env) == "v v xvy"
    assert expand("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:-d}", env) == "d d  v"
    assert expand("${SET:+alt} ${EMPTY:+alt}|${EMPTY+alt} ${UNSET+alt}|", env) == "alt |alt |"
    assert expand("${UNSET:-${SET}}", env) == "v"
    assert expand("'$SET' \"$SET\" \\$SET $ $1", env) == "$SET v $SET $ $1"
    assert expand('"a \\"q\\" b"', env) == 'a "q" b'
    with pytest.raises(DockerfileError, match="missing"):
        expand("${SET", env)
    with pytest.raises(DockerfileError, match="UNSET: must be set"):
        expand("${UNSET:?must be set}", env)
    with pytest.raises(DockerfileError, match="single-quote"):
        expand("'open", env)


def test_which_instructions_substitute() -> None:
    env = {"X": "ex"}
    assert words(_one("COPY $X ${X}/ /d/$X"), env) == ["ex", "ex/", "/d/ex"]
    assert words(_one('VOLUME ["/a/$X"]'), env) == ["/a/ex"]
    assert words(_one("EXPOSE ${X:-80}"), {}) == ["80"]
    # RUN and CMD are left to the shell.
    assert _one("RUN echo $X").args == "echo $X"
    assert command(_one('CMD ["echo", "$X"]'), ("/bin/sh", "-c")) == ("echo", "$X")


def test_env_and_label_pairs() -> None:
    assert key_values(_one('ENV A=1 B="two words" C=${A:-x}'), {"A": "old"}) == [
        ("A", "1"), ("B", "two words"), ("C", "old")]
    assert key_values(_one("ENV LEGACY value with  spaces"), {}) == [("LEGACY", "value with  spaces")]
    assert key_values(_one('LABEL "org.a"="x y" b=\'$NOT\''), {"NOT": "n"}) == [("org.a", "x y"), ("b", "$NOT")]
    assert arg_definitions(_one("ARG A B=${A:-d}"), {}) == [("A", None), ("B", "d")]


def test_healthcheck_forms() -> None:
    assert healthcheck(_one("HEALTHCHECK --interval=5s --timeout=1m30s --start-period=500ms --retries=2 "
                            "CMD wget -q localhost || exit 1")) == {
        "Test": ["CMD-SHELL", "wget -q localhost || exit 1"], "Interval": 5_000_000_000,
        "Timeout": 90_000_000_000, "StartPeriod": 500_000_000, "Retries": 2}
    assert healthcheck(_one('HEALTHCHECK CMD ["true"]')) == {"Test": ["CMD", "true"]}
    assert healthcheck(_one("HEALTHCHECK NONE")) == {"Test": ["NONE"]}


def test_stages_and_targets() -> None:
    df = parse_dockerfile("FROM busybox AS One\nRUN a\nFROM one\nFROM scratch\n")
    assert [(s.index, s.name, s.base, len(s.instructions)) for s in df.stages] == [
        (0, "one", "busybox", 1), (1, None, "one", 0), (2, None, "scratch", 0)]
    assert df.stage_index("ONE") == 0
    with pytest.raises(DockerfileError, match="target stage 'two' could not be found"):
        df.stage_index("two")


@pytest.mark.parametrize(("text", "message"), [
    ("FROM busybox\nRUN true\n\nRUNN x\n", "Dockerfile:4: unknown instruction: RUNN"),
    ("RUN true\n", "Dockerfile:1: RUN before the first FROM"),
    ("", "the Dockerfile has no instructions"),
    ("ARG A\n", "the Dockerfile has no FROM instruction"),
    ("FROM a b\n", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a AS 1x\n", "Dockerfile:1: invalid name for build stage"),
    ("FROM a AS x\nFROM b AS x\n", "Dockerfile:2: duplicate stage name 'x'"),
    ("FROM a\nCOPY one\n", "Dockerfile:2: COPY requires at least two arguments, but only 1 was provided"),
    ("FROM a\nCOPY --link a b\n", "Dockerfile:2: unknown flag: --link for COPY"),
    ("FROM a\nRUN --mount=type=cache,target=/x true\n", "Dockerfile:2: RUN --mount is a BuildKit feature"),
    ("FROM a\nRUN <<EOF\n", "Dockerfile:2: RUN with a heredoc is a BuildKit feature"),
    ("FROM a\nENV\n", "Dockerfile:2: ENV requires at least one argument"),
    ("FROM a\nENV =v\n", "Dockerfile:2: ENV names can not be blank"),
    ("FROM a\nENV A=1 B\n", "Dockerfile:2: ENV: 'B' is not KEY=VALUE"),
    ("FROM a\nENV LONELY\n", "Dockerfile:2: ENV LONELY must have two arguments"),
    ("FROM a\nARG 9x\n", "Dockerfile:2: ARG: invalid name '9x'"),
    ("FROM a\nSHELL /bin/sh -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON form"),
    ("FROM a\nWORKDIR\n", "Dockerfile:2: WORKDIR requires at least one argument"),
    ("FROM a\nHEALTHCHECK echo\n", "Dockerfile:2: HEALTHCHECK requires CMD followed by a command, or NONE"),
    ("FROM a\nHEALTHCHECK --interval=soon CMD true\n", "Dockerfile:2: HEALTHCHECK --interval: invalid duration"),
    ("FROM a\nHEALTHCHECK --retries=x CMD true\n", "Dockerfile:2: HEALTHCHECK --retries: 'x' is not a number"),
    ("FROM a\nONBUILD ONBUILD RUN x\n", "Dockerfile:2: ONBUILD isn't allowed as an ONBUILD trigger"),
    ("FROM a\nONBUILD RUNN x\n", "Dockerfile:2: unknown instruction: RUNN"),
    ("# escape=`\n# escape=\\\nFROM a\n", "Dockerfile:2: only one escape parser directive can be used"),
])
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text)
    assert str(info.value).startswith(message), str(info.value)


def test_substitution_errors_name_the_line() -> None:
    inst = parse_dockerfile("FROM a\n\nENV A=${B\n").stages[0].instructions[0]
    with pytest.raises(DockerfileError, match=r"^Dockerfile:3: ENV: missing '}'"):
        key_values(inst, {})


def test_split_words_keeps_quotes_and_escapes() -> None:
    assert split_words("a 'b c'  \"d e\" f\\ g") == ["a", "'b c'", '"d e"', "f\\ g"]
    assert parse_instruction("copy a b", 7).keyword == "COPY"


@pytest.mark.parametrize(("path", "excluded"), [
    ("a.log", True), ("sub/a.log", False), ("keep.log", False), ("build", True), ("build/deep/x", True),
    ("x/y/tmp", True), ("tmp/z", True), ("secret1", True), ("d/secret", False), ("./a.log", True),
    ("docs/a.md", True), ("docs/README.md", False), ("file?", False), ("fileX", True), ("[ab].c", False),
    ("a.c", True), ("", False),
])
def test_dockerignore(path: str, excluded: bool) -> None:
    ignore = parse_dockerignore("# comment\n\n*.log\n!keep.log\n/build/\n**/tmp\n./secret*\n"
                                "docs/**\n!docs/README.md\nfile?\n!file\\?\n[ab].c\n")
    assert ignore.excluded(path) is excluded
    assert ignore.has_exclusions


def test_dockerignore_errors_and_empty() -> None:
    assert not parse_dockerignore("").excluded("anything")
    with pytest.raises(DockerfileError, match="unclosed"):
        parse_dockerignore("[abc\n")
