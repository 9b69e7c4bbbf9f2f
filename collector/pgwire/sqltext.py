"""SQL text as a PostgreSQL client sends it: tokens, statement splitting and the few rewrites.

Takes query strings; gives the statements in them (split at top-level semicolons, comments kept),
the highest `$n` parameter they use, and a DuckDB-ready version of each statement. Tokenizing
keeps string literals, quoted identifiers and comments intact, so no rewrite ever touches data.

The rewrites, all token-level and all listed here because each one is a place where the endpoint
does not pass SQL through verbatim:

1. `OPERATOR(pg_catalog.op)` becomes `op` (psql's pattern matching in `\\d`).
2. `COLLATE pg_catalog.default` / `COLLATE "default"` / `COLLATE "C"` is dropped (psql).
3. `pg_catalog.<name>` loses its qualifier: DuckDB's own `pg_catalog` schema cannot be
   extended, and both its objects and our shims (functions, views, `regclass`-style type
   aliases) are found on the search path unqualified.
4. `current_setting('<PostgreSQL setting>')` and `version()` become string literals: DuckDB's
   built-ins win over same-named macros, and Grafana's version probe needs PostgreSQL answers.
5. A set-returning function in FROM with a bare alias, `generate_series(...) AS i`, gets a column
   alias, `AS i(i)`: in PostgreSQL the alias names the single column, in DuckDB it names a row.

Must not: execute anything, or change text inside literals, quoted identifiers or comments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
   |(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
   |(?P<string>[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*')
   |(?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?\$(?P=tag)\$)
   |(?P<qident>"(?:[^"]|"")*")
   |(?P<param>\$[0-9]+)
   |(?P<word>[A-Za-z_\u0080-\uffff][A-Za-z_0-9$\u0080-\uffff]*)
   |(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)
   |(?P<op>::|.)
    """,
    re.S | re.X,
)


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token: `kind` is ws, comment, string, dollar, qident, param, word, num, op."""

    kind: str
    text: str

    @property
    def upper(self) -> str:
        return self.text.upper()

    @property
    def is_code(self) -> bool:
        return self.kind not in ("ws", "comment")


def tokenize(sql: str) -> list[Token]:
    """Split `sql` into tokens; the concatenated texts give back `sql` exactly."""
    tokens: list[Token] = []
    for match in _TOKEN_RE.finditer(sql):
        kind = match.lastgroup or "op"
        if kind == "tag":
            kind = "dollar"
        tokens.append(Token(kind, match.group()))
    return tokens


def _text(tokens: Iterable[Token]) -> str:
    return "".join(t.text for t in tokens)


def split_statements(sql: str) -> list[str]:
    """The statements of a query string, split at top-level `;`; comment-only pieces dropped."""
    pieces: list[str] = []
    current: list[Token] = []
    for token in tokenize(sql):
        if token.kind == "op" and token.text == ";":
            if any(t.is_code for t in current):
                pieces.append(_text(current).strip())
            current = []
        else:
            current.append(token)
    if any(t.is_code for t in current):
        pieces.append(_text(current).strip())
    return pieces


def code_words(sql: str, limit: int = 8) -> list[str]:
    """The first `limit` code tokens in upper case (keywords for classification)."""
    out: list[str] = []
    for token in tokenize(sql):
        if token.is_code:
            out.append(token.upper if token.kind == "word" else token.text)
            if len(out) >= limit:
                break
    return out


def max_param_index(sql: str) -> int:
    """The highest `$n` placeholder used in `sql` (0 when there is none)."""
    highest = 0
    for token in tokenize(sql):
        if token.kind == "param":
            highest = max(highest, int(token.text[1:]))
    return highest


def cast_params(sql: str) -> dict[int, str]:
    """Types written next to placeholders: `$1::int` or `CAST($1 AS int)` give {1: 'INT'}."""
    toks = [t for t in tokenize(sql) if t.is_code]
    found: dict[int, str] = {}
    for i, tok in enumerate(toks):
        if tok.kind != "param":
            continue
        index = int(tok.text[1:])
        if (i + 2 < len(toks) and toks[i + 1].text == "::" and toks[i + 2].kind == "word") or (
            i >= 2
            and toks[i - 1].text == "("
            and toks[i - 2].upper == "CAST"
            and i + 2 < len(toks)
            and toks[i + 1].upper == "AS"
            and toks[i + 2].kind == "word"
        ):
            found.setdefault(index, _type_name(toks, i + 2))
    return found


def _type_name(toks: list[Token], start: int) -> str:
    """A type name starting at `toks[start]`, with `[]` and multi-word forms folded in."""
    words = [toks[start].upper]
    j = start + 1
    multi = {"DOUBLE": "PRECISION", "CHARACTER": "VARYING"}
    if words[0] in multi and j < len(toks) and toks[j].upper == multi[words[0]]:
        words.append(toks[j].upper)
        j += 1
    if words[0] == "TIMESTAMP" and j + 2 < len(toks) and toks[j].upper in ("WITH", "WITHOUT"):
        words += [toks[j].upper, toks[j + 1].upper, toks[j + 2].upper]
        j += 3
    name = " ".join(words)
    if j + 1 < len(toks) and toks[j].text == "[" and toks[j + 1].text == "]":
        name += "[]"
    return name


# -- rewrites ------------------------------------------------------------------------------------

#: Set-returning functions whose bare FROM alias names their single column in PostgreSQL.
_SRF_NAMES = frozenset({"generate_series", "string_to_array", "unnest", "regexp_split_to_table"})

_CLAUSE_WORDS = frozenset(
    {
        "SELECT", "FROM", "JOIN", "WHERE", "GROUP", "ORDER", "HAVING", "LIMIT", "OFFSET",
        "ON", "USING", "UNION", "EXCEPT", "INTERSECT", "WINDOW", "QUALIFY", "LATERAL",
        "RETURNING", "VALUES", "SET",
    }
)  # fmt: skip

_NOT_ALIAS = _CLAUSE_WORDS | {
    "AS", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "NATURAL", "WITH", "ORDINALITY",
    "POSITIONAL", "ANTI", "SEMI", "ASOF", "TABLESAMPLE", "USING", "FETCH", "FOR",
}  # fmt: skip

_COLLATIONS_DROPPED = frozenset({"DEFAULT", '"DEFAULT"', '"C"', "C", '"POSIX"', "POSIX"})


def _next_code(tokens: list[Token], i: int) -> int:
    """Index of the first code token at or after `i` (len(tokens) when none)."""
    while i < len(tokens) and not tokens[i].is_code:
        i += 1
    return i


def _prev_code(tokens: list[Token], i: int) -> int:
    """Index of the last code token at or before `i` (-1 when none)."""
    while i >= 0 and not tokens[i].is_code:
        i -= 1
    return i


def _matching_paren(tokens: list[Token], open_index: int) -> int:
    depth = 0
    for j in range(open_index, len(tokens)):
        text = tokens[j].text
        if tokens[j].kind == "op" and text == "(":
            depth += 1
        elif tokens[j].kind == "op" and text == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def rewrite_for_duckdb(sql: str, settings: Mapping[str, str], version_text: str) -> str:
    """Apply the documented rewrites (see the module docstring) to one statement."""
    tokens = tokenize(sql)
    out: list[Token] = []
    i = 0
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        if tok.kind != "word":
            out.append(tok)
            i += 1
            continue
        word = tok.upper
        # 1. OPERATOR(pg_catalog.~) -> ~
        if word == "OPERATOR":
            j = _next_code(tokens, i + 1)
            if j < n and tokens[j].text == "(":
                close = _matching_paren(tokens, j)
                if close > 0:
                    inner = [t for t in tokens[j + 1 : close] if t.is_code]
                    if len(inner) >= 2 and inner[0].upper == "PG_CATALOG" and inner[1].text == ".":
                        inner = inner[2:]
                    out.append(Token("op", " " + _text(inner) + " "))
                    i = close + 1
                    continue
        # 2. COLLATE pg_catalog.default -> (nothing)
        if word == "COLLATE":
            j = _next_code(tokens, i + 1)
            k = j
            if j < n and tokens[j].upper == "PG_CATALOG":
                dot = _next_code(tokens, j + 1)
                if dot < n and tokens[dot].text == ".":
                    k = _next_code(tokens, dot + 1)
            if k < n and tokens[k].upper in _COLLATIONS_DROPPED:
                i = k + 1
                continue
        # 3. pg_catalog.<name> -> <name>
        if word == "PG_CATALOG":
            dot = _next_code(tokens, i + 1)
            if dot < n and tokens[dot].text == ".":
                name_at = _next_code(tokens, dot + 1)
                if name_at < n and tokens[name_at].kind in ("word", "qident"):
                    i = name_at
                    continue
        # 4. current_setting('server_version_num') -> '150000'; version() -> literal
        if word == "CURRENT_SETTING":
            lp = _next_code(tokens, i + 1)
            arg = _next_code(tokens, lp + 1)
            rp = _next_code(tokens, arg + 1)
            if (
                rp < n
                and tokens[lp].text == "("
                and tokens[arg].kind == "string"
                and tokens[rp].text == ")"
                and tokens[arg].text[:1] not in ("e", "E")
            ):
                name = tokens[arg].text[1:-1].replace("''", "'").lower()
                if name in settings:
                    out.append(Token("string", _quote_literal(settings[name])))
                    i = rp + 1
                    continue
        if word == "VERSION":
            lp = _next_code(tokens, i + 1)
            rp = _next_code(tokens, lp + 1)
            prev = _prev_code(tokens, i - 1)
            if (
                rp < n
                and tokens[lp].text == "("
                and tokens[rp].text == ")"
                and (prev < 0 or tokens[prev].text != ".")
            ):
                out.append(Token("string", _quote_literal(version_text)))
                i = rp + 1
                continue
        # 5. FROM generate_series(...) AS i  ->  FROM generate_series(...) AS i(i)
        if tok.text.lower() in _SRF_NAMES and _in_from_clause(tokens, i):
            lp = _next_code(tokens, i + 1)
            if lp < n and tokens[lp].text == "(":
                close = _matching_paren(tokens, lp)
                if close > 0:
                    alias_at = _next_code(tokens, close + 1)
                    if alias_at < n and tokens[alias_at].upper == "AS":
                        alias_at = _next_code(tokens, alias_at + 1)
                    after = _next_code(tokens, alias_at + 1)
                    if (
                        alias_at < n
                        and tokens[alias_at].kind in ("word", "qident")
                        and tokens[alias_at].upper not in _NOT_ALIAS
                        and (after >= n or tokens[after].text != "(")
                    ):
                        body = rewrite_for_duckdb(
                            _text(tokens[i : alias_at + 1]), settings, version_text
                        )
                        alias = tokens[alias_at].text
                        out.append(Token("word", body + "(" + alias + ")"))
                        i = alias_at + 1
                        continue
        out.append(tok)
        i += 1
    return _text(out)


def _in_from_clause(tokens: list[Token], index: int) -> bool:
    """Whether the token at `index` sits in a FROM list (not in a SELECT list or WHERE)."""
    depth = 0
    j = index - 1
    while j >= 0:
        tok = tokens[j]
        if tok.kind == "op" and tok.text == ")":
            depth += 1
        elif tok.kind == "op" and tok.text == "(":
            if depth == 0:
                return False
            depth -= 1
        elif depth == 0 and tok.kind == "word" and tok.upper in _CLAUSE_WORDS:
            return tok.upper in ("FROM", "JOIN", "LATERAL")
        j -= 1
    return False


def substitute_params(sql: str, literal_for: Mapping[int, str]) -> str:
    """Replace `$n` placeholders by SQL expressions (used to describe without executing)."""
    out: list[str] = []
    for token in tokenize(sql):
        if token.kind == "param":
            out.append(literal_for.get(int(token.text[1:]), "NULL"))
        else:
            out.append(token.text)
    return "".join(out)


# -- session commands ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionCommand:
    """A statement the endpoint answers itself: transaction control, SET, RESET, SHOW, ..."""

    verb: str  # BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE, SET, RESET, SHOW, DISCARD, ...
    name: str = ""  # setting name for SET/RESET/SHOW, lower case
    value: str = ""  # SET value, unquoted


_TX_VERBS = {
    "BEGIN": "BEGIN",
    "START": "BEGIN",
    "COMMIT": "COMMIT",
    "END": "COMMIT",
    "ROLLBACK": "ROLLBACK",
    "ABORT": "ROLLBACK",
    "SAVEPOINT": "SAVEPOINT",
    "RELEASE": "RELEASE",
}


def _unquote_value(tokens: list[Token]) -> str:
    parts: list[str] = []
    for tok in tokens:
        if tok.kind == "string":
            body = tok.text[1:-1] if tok.text[0] == "'" else tok.text[2:-1]
            parts.append(body.replace("''", "'"))
        elif tok.kind == "qident":
            parts.append(tok.text[1:-1].replace('""', '"'))
        else:
            parts.append(tok.text)
    return " ".join(p for p in parts if p != ",") if len(parts) > 1 else "".join(parts)


def parse_session_command(sql: str) -> SessionCommand | None:
    """Recognise statements handled without DuckDB; None for everything else."""
    toks = [t for t in tokenize(sql) if t.is_code]
    if not toks or toks[0].kind != "word":
        return None
    first = toks[0].upper
    if first in _TX_VERBS:
        if first == "START" and (len(toks) < 2 or toks[1].upper != "TRANSACTION"):
            return None
        if first == "ROLLBACK" and any(t.upper == "TO" for t in toks[1:3]):
            return SessionCommand("ROLLBACK TO")
        return SessionCommand(_TX_VERBS[first])
    if first == "SET":
        rest = toks[1:]
        if rest and rest[0].upper in ("SESSION", "LOCAL"):
            if len(rest) > 1 and rest[0].upper == "SESSION" and rest[1].upper == "CHARACTERISTICS":
                return SessionCommand("SET", "session characteristics", "")
            rest = rest[1:]
        if not rest:
            return SessionCommand("SET", "", "")
        if rest[0].upper == "TRANSACTION":
            return SessionCommand("SET", "transaction", _text(rest[1:]))
        if rest[0].upper == "TIME" and len(rest) > 1 and rest[1].upper == "ZONE":
            return SessionCommand("SET", "timezone", _unquote_value(rest[2:]))
        if rest[0].upper in ("NAMES",):
            return SessionCommand("SET", "client_encoding", _unquote_value(rest[1:]))
        if rest[0].upper in ("GLOBAL", "VARIABLE"):
            name = rest[1].text.lower() if len(rest) > 1 else ""
            return SessionCommand("SET", name, "")
        name_toks: list[Token] = []
        j = 0
        while j < len(rest) and rest[j].text not in ("=",) and rest[j].upper != "TO":
            name_toks.append(rest[j])
            j += 1
        name = _unquote_value(name_toks).replace(" ", "").lower()
        return SessionCommand("SET", name, _unquote_value(rest[j + 1 :]))
    if first == "RESET":
        name = _unquote_value(toks[1:]).replace(" ", "").lower() if len(toks) > 1 else ""
        return SessionCommand("RESET", name)
    if first == "SHOW" and len(toks) >= 2:
        name = _unquote_value(toks[1:]).replace(" ", "").lower()
        return SessionCommand("SHOW", name)
    if first == "DISCARD":
        return SessionCommand("DISCARD", _unquote_value(toks[1:]).lower())
    if first == "DEALLOCATE":
        rest = toks[1:]
        if rest and rest[0].upper == "PREPARE":
            rest = rest[1:]
        return SessionCommand("DEALLOCATE", _unquote_value(rest) if rest else "")
    if first in ("LISTEN", "UNLISTEN", "NOTIFY"):
        return SessionCommand(first)
    return None
