"""A small PromQL parser and label checker for the alert-rule tests.

It parses a PromQL expression into a tree (a real tokenizer and a precedence-climbing
parser, not regexes over the text), so it knows which metric names and label matchers
each vector selector has, which labels `by`/`without` group on and which metrics are
inside that aggregation, which labels `on`/`ignoring`/`group_left`/`group_right` match
on and which operands they apply to.

`analyze(expr, lookup)` then infers the label set of every sub-expression from the metrics'
labels (`lookup(name)` returns the label names a metric's series have, or None when unknown)
and reports every label used where the series under it cannot have it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

# --------------------------------------------------------------------------- tokens

AGGREGATIONS = {
    "sum", "avg", "count", "min", "max", "stddev", "stdvar", "group",
    "topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio",
}
# aggregations whose first argument is a parameter (number or string) rather than the vector
PARAM_AGGREGATIONS = {"topk", "bottomk", "quantile", "count_values", "limitk", "limit_ratio"}
# aggregations that keep the input series' labels
KEEP_LABEL_AGGREGATIONS = {"topk", "bottomk", "limitk", "limit_ratio"}

SET_OPS = {"and", "or", "unless"}
COMPARISON_OPS = {"==", "!=", "<", "<=", ">", ">="}
PRECEDENCE = {
    "or": 1,
    "and": 2, "unless": 2,
    "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
    "+": 4, "-": 4,
    "*": 5, "/": 5, "%": 5, "atan2": 5,
    "^": 6,
}
RIGHT_ASSOC = {"^"}

# functions that need a counter (or histogram bucket/sum/count) range vector
COUNTER_FUNCTIONS = {"rate", "irate", "increase", "resets"}
# functions meant for gauges
GAUGE_FUNCTIONS = {"delta", "idelta", "deriv", "predict_linear"}
SCALAR_FUNCTIONS = {"scalar", "time", "pi"}  # return scalars

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)(?![A-Za-z0-9_])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|==|!=|<=|>=|[-+*/%^<>=,(){}\[\]:@])
    """,
    re.VERBOSE,
)


class PromQLError(ValueError):
    pass


@dataclass
class Token:
    kind: str  # duration number string ident op eof
    text: str
    pos: int


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    brackets = 0  # inside [...] a ':' separates range and step (it never starts a name there)
    while pos < len(expr):
        if brackets and expr[pos] == ":":
            tokens.append(Token("op", ":", pos))
            pos += 1
            continue
        m = _TOKEN_RE.match(expr, pos)
        if not m:
            raise PromQLError(f"unexpected character {expr[pos]!r} at {pos} in {expr!r}")
        kind = m.lastgroup
        if kind != "ws":
            tokens.append(Token(kind, m.group(0), pos))
            if m.group(0) == "[":
                brackets += 1
            elif m.group(0) == "]" and brackets:
                brackets -= 1
        pos = m.end()
    tokens.append(Token("eof", "", pos))
    return tokens


def _unquote(text: str) -> str:
    if text.startswith("`"):
        return text[1:-1]
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), body)


# --------------------------------------------------------------------------- AST


@dataclass
class Node:
    pass


@dataclass
class NumberLit(Node):
    value: str


@dataclass
class StringLit(Node):
    value: str


@dataclass
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str


@dataclass
class VectorSelector(Node):
    name: str | None
    matchers: list[Matcher]
    range: str | None = None  # "5m" for matrix selectors

    def equality_labels(self) -> set[str]:
        return {m.label for m in self.matchers if m.op == "=" and m.label != "__name__"}


@dataclass
class Call(Node):
    func: str
    args: list[Node]


@dataclass
class Aggregation(Node):
    op: str
    expr: Node
    param: Node | None
    grouping: list[str] | None  # None: no clause
    without: bool


@dataclass
class VectorMatching:
    on: bool | None  # True on(...), False ignoring(...), None neither
    labels: list[str]
    group: str | None  # "left" | "right" | None
    include: list[str]


@dataclass
class Binary(Node):
    op: str
    lhs: Node
    rhs: Node
    bool_modifier: bool
    matching: VectorMatching | None


@dataclass
class Unary(Node):
    op: str
    expr: Node


@dataclass
class Paren(Node):
    expr: Node


@dataclass
class Subquery(Node):
    expr: Node
    range: str
    step: str | None


# --------------------------------------------------------------------------- parser


class Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = tokenize(expr)
        self.i = 0

    # token helpers
    def peek(self, k: int = 0) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def at(self, text: str, kind: str | None = None) -> bool:
        tok = self.peek()
        return tok.text == text and (kind is None or tok.kind == kind)

    def expect(self, text: str) -> Token:
        tok = self.next()
        if tok.text != text:
            raise PromQLError(f"expected {text!r} at {tok.pos}, got {tok.text!r} in {self.expr!r}")
        return tok

    def fail(self, what: str) -> PromQLError:
        tok = self.peek()
        return PromQLError(f"{what} at {tok.pos} (got {tok.text!r}) in {self.expr!r}")

    # grammar
    def parse(self) -> Node:
        node = self.parse_expr(0)
        if self.peek().kind != "eof":
            raise self.fail("unexpected trailing input")
        return node

    def _binary_op(self) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.text in PRECEDENCE:
            return tok.text
        if tok.kind == "ident" and tok.text.lower() in PRECEDENCE:
            return tok.text.lower()
        return None

    def parse_expr(self, min_prec: int) -> Node:
        lhs = self.parse_unary()
        while True:
            op = self._binary_op()
            if op is None or PRECEDENCE[op] < min_prec:
                return lhs
            self.next()
            bool_modifier = False
            if self.peek().kind == "ident" and self.peek().text == "bool":
                self.next()
                bool_modifier = True
            matching = self.parse_vector_matching()
            next_min = PRECEDENCE[op] if op in RIGHT_ASSOC else PRECEDENCE[op] + 1
            rhs = self.parse_expr(next_min)
            lhs = Binary(op, lhs, rhs, bool_modifier, matching)

    def parse_vector_matching(self) -> VectorMatching | None:
        tok = self.peek()
        if tok.kind != "ident" or tok.text not in ("on", "ignoring", "group_left", "group_right"):
            return None
        on: bool | None = None
        labels: list[str] = []
        if tok.text in ("on", "ignoring"):
            self.next()
            on = tok.text == "on"
            labels = self.parse_label_list()
        group = None
        include: list[str] = []
        tok = self.peek()
        if tok.kind == "ident" and tok.text in ("group_left", "group_right"):
            self.next()
            group = "left" if tok.text == "group_left" else "right"
            if self.at("("):
                include = self.parse_label_list()
        return VectorMatching(on, labels, group, include)

    def parse_label_list(self) -> list[str]:
        self.expect("(")
        labels: list[str] = []
        while not self.at(")"):
            tok = self.next()
            if tok.kind == "ident":
                labels.append(tok.text)
            elif tok.kind == "string":
                labels.append(_unquote(tok.text))
            else:
                raise PromQLError(f"expected a label name at {tok.pos}, got {tok.text!r} in {self.expr!r}")
            if not self.at(")"):
                self.expect(",")
        self.expect(")")
        return labels

    def parse_unary(self) -> Node:
        if self.peek().kind == "op" and self.peek().text in ("+", "-"):
            op = self.next().text
            # unary binds looser than ^ : -a^b == -(a^b)
            return Unary(op, self.parse_expr(PRECEDENCE["^"]))
        return self.parse_postfix(self.parse_primary())

    def parse_postfix(self, node: Node) -> Node:
        while True:
            if self.at("["):
                self.next()
                rng = self.parse_duration()
                if self.at(":"):
                    self.next()
                    step = None if self.at("]") else self.parse_duration()
                    self.expect("]")
                    node = Subquery(node, rng, step)
                else:
                    self.expect("]")
                    if not isinstance(node, VectorSelector) or node.range is not None:
                        raise PromQLError(f"range [{rng}] applied to a non-selector in {self.expr!r}")
                    node.range = rng
            elif self.peek().kind == "ident" and self.peek().text == "offset":
                self.next()
                if self.peek().kind == "op" and self.peek().text == "-":
                    self.next()
                self.parse_duration()
            elif self.at("@"):
                self.next()
                tok = self.next()
                if tok.kind == "ident" and tok.text in ("start", "end"):
                    self.expect("(")
                    self.expect(")")
                elif tok.kind != "number":
                    raise PromQLError(f"bad @ modifier at {tok.pos} in {self.expr!r}")
            else:
                return node

    def parse_duration(self) -> str:
        tok = self.next()
        if tok.kind not in ("duration", "number"):
            raise PromQLError(f"expected a duration at {tok.pos}, got {tok.text!r} in {self.expr!r}")
        return tok.text

    def parse_primary(self) -> Node:
        tok = self.peek()
        if tok.kind == "number":
            self.next()
            return NumberLit(tok.text)
        if tok.kind == "duration":  # durations are numbers (seconds) in expressions
            self.next()
            return NumberLit(tok.text)
        if tok.kind == "string":
            self.next()
            return StringLit(_unquote(tok.text))
        if tok.text == "(":
            self.next()
            inner = self.parse_expr(0)
            self.expect(")")
            return Paren(inner)
        if tok.text == "{":
            return self.parse_selector(None)
        if tok.kind == "ident":
            name = tok.text
            lower = name.lower()
            if lower in ("inf", "nan") and not self.peek(1).text in ("{", "("):
                self.next()
                return NumberLit(name)
            if lower in AGGREGATIONS and (self.peek(1).text == "(" or self.peek(1).text in ("by", "without")):
                return self.parse_aggregation()
            if self.peek(1).text == "(":
                self.next()
                return Call(name, self.parse_args())
            self.next()
            return self.parse_selector(name)
        raise self.fail("unexpected token")

    def parse_args(self) -> list[Node]:
        self.expect("(")
        args: list[Node] = []
        while not self.at(")"):
            args.append(self.parse_expr(0))
            if not self.at(")"):
                self.expect(",")
        self.expect(")")
        return args

    def parse_aggregation(self) -> Node:
        op = self.next().text.lower()
        grouping: list[str] | None = None
        without = False
        if self.peek().text in ("by", "without"):
            without = self.next().text == "without"
            grouping = self.parse_label_list()
        args = self.parse_args()
        if self.peek().kind == "ident" and self.peek().text in ("by", "without"):
            if grouping is not None:
                raise self.fail("two grouping clauses")
            without = self.next().text == "without"
            grouping = self.parse_label_list()
        if op in PARAM_AGGREGATIONS:
            if len(args) != 2:
                raise PromQLError(f"{op} takes 2 arguments in {self.expr!r}")
            return Aggregation(op, args[1], args[0], grouping, without)
        if len(args) != 1:
            raise PromQLError(f"{op} takes 1 argument in {self.expr!r}")
        return Aggregation(op, args[0], None, grouping, without)

    def parse_selector(self, name: str | None) -> VectorSelector:
        matchers: list[Matcher] = []
        if self.at("{"):
            self.next()
            while not self.at("}"):
                tok = self.next()
                if tok.kind == "string" and (self.at(",") or self.at("}")):
                    # Prometheus 3 quoted metric name: {"my.metric", label="x"}
                    if name is not None:
                        raise PromQLError(f"metric name given twice in {self.expr!r}")
                    name = _unquote(tok.text)
                else:
                    if tok.kind == "ident":
                        label = tok.text
                    elif tok.kind == "string":
                        label = _unquote(tok.text)
                    else:
                        raise PromQLError(f"expected a label name at {tok.pos}, got {tok.text!r} in {self.expr!r}")
                    op_tok = self.next()
                    if op_tok.text not in ("=", "!=", "=~", "!~"):
                        raise PromQLError(f"expected a matcher operator at {op_tok.pos} in {self.expr!r}")
                    val = self.next()
                    if val.kind != "string":
                        raise PromQLError(f"expected a quoted label value at {val.pos} in {self.expr!r}")
                    matchers.append(Matcher(label, op_tok.text, _unquote(val.text)))
                if not self.at("}"):
                    self.expect(",")
            self.expect("}")
        if name is None:
            for m in matchers:
                if m.label == "__name__" and m.op == "=":
                    name = m.value
        if name is None and not matchers:
            raise self.fail("empty selector")
        return VectorSelector(name, matchers)


def parse(expr: str) -> Node:
    return Parser(expr).parse()


# --------------------------------------------------------------------------- walking


def walk(node: Node) -> Iterable[Node]:
    yield node
    if isinstance(node, (Paren, Unary, Subquery)):
        yield from walk(node.expr)
    elif isinstance(node, Call):
        for a in node.args:
            yield from walk(a)
    elif isinstance(node, Aggregation):
        if node.param is not None:
            yield from walk(node.param)
        yield from walk(node.expr)
    elif isinstance(node, Binary):
        yield from walk(node.lhs)
        yield from walk(node.rhs)


def selectors(expr: str | Node) -> list[VectorSelector]:
    """Every vector/matrix selector in the expression, in order."""
    node = parse(expr) if isinstance(expr, str) else expr
    return [n for n in walk(node) if isinstance(n, VectorSelector)]


def metric_names(expr: str | Node) -> set[str]:
    return {s.name for s in selectors(expr) if s.name is not None}


# --------------------------------------------------------------------------- label inference

Lookup = Callable[[str], "frozenset[str] | None"]


@dataclass
class Result:
    kind: str  # "scalar" | "string" | "vector"
    labels: frozenset[str] | None = None  # None: unknown


@dataclass
class Analysis:
    labels: frozenset[str] | None  # labels of the expression's output series (None: unknown)
    problems: list[str] = field(default_factory=list)
    selectors: list[VectorSelector] = field(default_factory=list)
    # (function, selector) pairs: selectors read by rate() & co., by delta() & co., by histogram_quantile()
    counter_uses: list[tuple[str, VectorSelector]] = field(default_factory=list)
    gauge_uses: list[tuple[str, VectorSelector]] = field(default_factory=list)
    bucket_uses: list[VectorSelector] = field(default_factory=list)


def _fmt(labels: Iterable[str]) -> str:
    return "{" + ", ".join(sorted(labels)) + "}"


class _Analyzer:
    def __init__(self, lookup: Lookup, expr: str) -> None:
        self.lookup = lookup
        self.expr = expr
        self.out = Analysis(None)

    def need(self, wanted: Iterable[str], have: frozenset[str] | None, where: str) -> None:
        if have is None:
            return
        missing = [l for l in wanted if l not in have]
        if missing:
            self.out.problems.append(
                f"{where}: label(s) {_fmt(missing)} not on the series there, which have {_fmt(have)}"
            )

    def run(self, node: Node) -> Result:
        if isinstance(node, NumberLit):
            return Result("scalar")
        if isinstance(node, StringLit):
            return Result("string")
        if isinstance(node, (Paren, Unary)):
            return self.run(node.expr)
        if isinstance(node, Subquery):
            return self.run(node.expr)
        if isinstance(node, VectorSelector):
            return self.selector(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Aggregation):
            return self.aggregation(node)
        if isinstance(node, Binary):
            return self.binary(node)
        raise PromQLError(f"unknown node {node!r}")  # pragma: no cover

    def selector(self, sel: VectorSelector) -> Result:
        self.out.selectors.append(sel)
        labels = self.lookup(sel.name) if sel.name is not None else None
        if labels is not None:
            self.need(
                [m.label for m in sel.matchers if m.label != "__name__"],
                labels,
                f"selector {sel.name}{{{', '.join(m.label + m.op + repr(m.value) for m in sel.matchers)}}}",
            )
            labels = frozenset(labels)
        return Result("vector", labels)

    def _vector_args(self, node: Call) -> list[Result]:
        return [self.run(a) for a in node.args]

    def call(self, node: Call) -> Result:
        func = node.func
        if func in COUNTER_FUNCTIONS or func in GAUGE_FUNCTIONS:
            for sub in walk(node.args[0]) if node.args else ():
                if isinstance(sub, VectorSelector):
                    target = self.out.counter_uses if func in COUNTER_FUNCTIONS else self.out.gauge_uses
                    target.append((func, sub))
        if func == "histogram_quantile" and len(node.args) == 2:
            for sub in walk(node.args[1]):
                if isinstance(sub, VectorSelector):
                    self.out.bucket_uses.append(sub)
        results = self._vector_args(node)
        vec = next((r for r in results if r.kind == "vector"), None)
        if func in SCALAR_FUNCTIONS:
            return Result("scalar")
        if func == "vector":
            return Result("vector", frozenset())
        if func in ("absent", "absent_over_time"):
            sel = node.args[0] if node.args else None
            while isinstance(sel, Paren):
                sel = sel.expr
            if isinstance(sel, VectorSelector):
                return Result("vector", frozenset(sel.equality_labels()))
            return Result("vector", frozenset())
        if vec is None:
            return Result("vector", None)
        labels = vec.labels
        if func == "histogram_quantile":
            self.need(["le"], labels, "histogram_quantile")
            return Result("vector", None if labels is None else labels - {"le"})
        if func == "label_replace" and len(node.args) == 5:
            dst, src = self._string(node.args[1]), self._string(node.args[3])
            if src:
                self.need([src], labels, f"label_replace source label {src!r}")
            return Result("vector", None if labels is None or dst is None else labels | {dst})
        if func == "label_join" and len(node.args) >= 3:
            dst = self._string(node.args[1])
            srcs = [s for s in (self._string(a) for a in node.args[3:]) if s]
            self.need(srcs, labels, "label_join source labels")
            return Result("vector", None if labels is None or dst is None else labels | {dst})
        if func in ("sort_by_label", "sort_by_label_desc"):
            self.need([s for s in (self._string(a) for a in node.args[1:]) if s], labels, func)
        return Result("vector", labels)

    @staticmethod
    def _string(node: Node) -> str | None:
        while isinstance(node, Paren):
            node = node.expr
        return node.value if isinstance(node, StringLit) else None

    def aggregation(self, node: Aggregation) -> Result:
        if node.param is not None:
            self.run(node.param)
        inner = self.run(node.expr)
        labels = inner.labels
        grouping = node.grouping or []
        clause = f"{node.op} {'without' if node.without else 'by'} ({', '.join(grouping)})"
        if grouping:
            self.need(grouping, labels, clause)
        if node.op in KEEP_LABEL_AGGREGATIONS:
            return Result("vector", labels)
        if node.without:
            out = None if labels is None else labels - set(grouping)
        else:
            out = frozenset(grouping)
        if node.op == "count_values" and out is not None:
            name = self._string(node.param) if node.param is not None else None
            out = None if name is None else out | {name}
        return Result("vector", out)

    def binary(self, node: Binary) -> Result:
        lhs, rhs = self.run(node.lhs), self.run(node.rhs)
        if lhs.kind != "vector" and rhs.kind != "vector":
            return Result("scalar")
        if lhs.kind != "vector":
            return Result("vector", rhs.labels)
        if rhs.kind != "vector":
            return Result("vector", lhs.labels)
        m = node.matching or VectorMatching(None, [], None, [])
        where = f"'{node.op}' {'on' if m.on else 'ignoring' if m.on is False else ''}({', '.join(m.labels)})"
        if m.on is True:
            self.need(m.labels, lhs.labels, f"left side of {where}")
            self.need(m.labels, rhs.labels, f"right side of {where}")
        elif m.on is False and lhs.labels is not None and rhs.labels is not None:
            self.need(m.labels, lhs.labels | rhs.labels, f"{where}")
        if node.op in SET_OPS:
            if node.op == "or":
                both = None if lhs.labels is None or rhs.labels is None else lhs.labels | rhs.labels
                return Result("vector", both)
            return Result("vector", lhs.labels)
        if m.group == "left":
            self.need(m.include, rhs.labels, f"group_left({', '.join(m.include)}) of {where}")
            out = None if lhs.labels is None else lhs.labels | set(m.include)
            return Result("vector", out)
        if m.group == "right":
            self.need(m.include, lhs.labels, f"group_right({', '.join(m.include)}) of {where}")
            out = None if rhs.labels is None else rhs.labels | set(m.include)
            return Result("vector", out)
        # one-to-one: series pair up only when all their (non-ignored / on) labels are equal
        if lhs.labels is not None and rhs.labels is not None:
            if m.on is True:
                pass
            else:
                ignored = set(m.labels) if m.on is False else set()
                left, right = lhs.labels - ignored, rhs.labels - ignored
                if left != right:
                    self.out.problems.append(
                        f"'{node.op}' matches one-to-one on all labels but the sides differ: "
                        f"left {_fmt(left)}, right {_fmt(right)} (use on(...)/ignoring(...))"
                    )
        if m.on is True:
            return Result("vector", frozenset(m.labels))
        if m.on is False:
            return Result("vector", None if lhs.labels is None else lhs.labels - set(m.labels))
        return Result("vector", lhs.labels)


def analyze(expr: str, lookup: Lookup) -> Analysis:
    """Parse `expr`, infer labels with `lookup`, and return the output labels, the selectors,
    how selectors are used, and every label problem found."""
    analyzer = _Analyzer(lookup, expr)
    result = analyzer.run(parse(expr))
    analyzer.out.labels = result.labels if result.kind == "vector" else frozenset()
    return analyzer.out


_TEMPLATE_LABEL_RE = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)|index\s+\$labels\s+\"([^\"]+)\"")


def template_labels(text: str) -> set[str]:
    """Label names a rule's annotation/label template reads through $labels."""
    return {a or b for a, b in _TEMPLATE_LABEL_RE.findall(text or "")}
