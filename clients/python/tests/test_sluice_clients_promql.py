"""The PromQL extractor/label checker used by the alert-rule test, on expressions of our own."""

from __future__ import annotations

import pytest

from sluice_promql import PromQLError, analyze, metric_names, parse, selectors, template_labels

LABELS = {
    "http_requests_total": {"service", "method", "route", "status", "job", "instance"},
    "http_request_duration_seconds_bucket": {"service", "method", "route", "le", "job", "instance"},
    "http_request_duration_seconds_sum": {"service", "method", "route", "job", "instance"},
    "http_request_duration_seconds_count": {"service", "method", "route", "job", "instance"},
    "budget_spend_dollars": {"service", "budget", "job", "instance"},
    "budget_limit_dollars": {"service", "budget", "job", "instance"},
    "gpu_utilization_ratio": {"service", "gpu", "job", "instance"},
}


def lookup(name):
    if name.startswith("nvidia_smi_") or name == "up":
        return None
    return frozenset(LABELS[name])


def sel(expr):
    return [(s.name, [(m.label, m.op, m.value) for m in s.matchers], s.range) for s in selectors(expr)]


# --------------------------------------------------------------------------- extraction


def test_selectors_names_matchers_ranges():
    expr = 'sum by (job) (rate(http_requests_total{status=~"5..", job!="x"}[5m] offset 1h)) / on(job) group_left up'
    assert sel(expr) == [
        ("http_requests_total", [("status", "=~", "5.."), ("job", "!=", "x")], "5m"),
        ("up", [], None),
    ]


def test_name_from___name___and_quoted_name():
    assert sel('{__name__="up", job="a"}') == [("up", [("__name__", "=", "up"), ("job", "=", "a")], None)]
    assert sel('{"http.server.duration", job="a"}') == [("http.server.duration", [("job", "=", "a")], None)]
    assert sel('{__name__=~"http_.*"}')[0][0] is None


def test_strings_with_braces_commas_and_escapes_do_not_confuse_it():
    expr = r'''label_replace(http_requests_total{route="/a/{id},b", method='G\'ET'}, "x", "$1", "route", "(.*)")'''
    assert sel(expr) == [("http_requests_total", [("route", "=", "/a/{id},b"), ("method", "=", "G'ET")], None)]


def test_keywords_functions_numbers_and_durations_are_not_metrics():
    expr = (
        "histogram_quantile(0.95, sum without (instance) (rate(http_request_duration_seconds_bucket[1h30m:1m])))"
        " > bool 2.5e0 and on() vector(1) or time() - 1e3 < Inf unless absent(up{job=\"x\"})"
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "up"}


def test_aggregation_clause_before_or_after_and_params():
    for expr in (
        "sum by (route) (http_requests_total)",
        "sum(http_requests_total) by (route)",
        "topk by (route) (3, http_requests_total)",
        'count_values by (route) ("code", http_requests_total)',
        "quantile(0.9, http_requests_total) by (route)",
    ):
        assert metric_names(expr) == {"http_requests_total"}, expr
        assert analyze(expr, lookup).problems == [], expr


def test_precedence_and_unary():
    tree = parse("-a ^ b * c + d > 1")
    assert type(tree).__name__ == "Binary" and tree.op == ">"
    add = tree.lhs
    assert add.op == "+" and add.lhs.op == "*"
    assert type(add.lhs.lhs).__name__ == "Unary"
    assert parse("a ^ b ^ c").rhs.op == "^"  # right associative
    assert parse("a or b and c").op == "or"


def test_subquery_offset_at_and_comments():
    expr = """
      # a comment with {braces} and "quotes"
      max_over_time(rate(http_requests_total[5m])[1h:5m] @ end()) offset -5m
    """
    assert metric_names(expr) == {"http_requests_total"}


@pytest.mark.parametrize(
    "bad",
    ["sum by (job (x)", "rate(x[5m]", "x{job=}", "x{job='a'", "x +", "x{job~'a'}", "(x))", "5m[5m]"],
)
def test_syntax_errors_are_reported(bad):
    with pytest.raises(PromQLError):
        parse(bad)


def test_template_labels():
    text = '{{ $labels.job }} on {{$labels.instance}} {{ index $labels "gpu" }} {{ $value }} $labelsx'
    assert template_labels(text) == {"job", "instance", "gpu"}


# --------------------------------------------------------------------------- label inference


def problems(expr):
    return analyze(expr, lookup).problems


def out_labels(expr):
    return analyze(expr, lookup).labels


def test_matcher_label_missing_on_metric():
    [p] = problems('http_requests_total{code="500"}')
    assert "{code}" in p and "http_requests_total" in p


def test_by_label_missing_under_aggregation():
    [p] = problems("sum by (job, endpoint) (rate(http_requests_total[5m]))")
    assert "sum by (job, endpoint)" in p and "{endpoint}" in p
    assert out_labels("sum by (job, route) (rate(http_requests_total[5m]))") == {"job", "route"}


def test_by_label_removed_by_inner_aggregation():
    [p] = problems("max by (route) (sum by (job) (rate(http_requests_total[5m])))")
    assert "{route}" in p and "which have {job}" in p


def test_without_removes_labels():
    assert out_labels("sum without (instance, status) (http_requests_total)") == {"service", "method", "route", "job"}


def test_histogram_quantile_needs_le_and_drops_it():
    assert problems("histogram_quantile(0.9, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))") == []
    assert out_labels("histogram_quantile(0.9, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))") == {"job"}
    [p] = problems("histogram_quantile(0.9, sum by (job) (rate(http_request_duration_seconds_bucket[5m])))")
    assert "histogram_quantile" in p and "{le}" in p


def test_on_and_group_left_labels():
    assert problems("budget_spend_dollars / on (service, budget) budget_limit_dollars") == []
    left, right = problems("budget_spend_dollars / on (service, gpu) budget_limit_dollars")
    assert "{gpu}" in left and "left side" in left
    assert "{gpu}" in right and "right side" in right
    [p] = problems("budget_spend_dollars / on (service, budget) gpu_utilization_ratio")
    assert "{budget}" in p and "right side" in p
    p2 = problems("gpu_utilization_ratio * on (service) group_left (budget, route) budget_limit_dollars")
    assert len(p2) == 1 and "{route}" in p2[0] and "group_left" in p2[0]
    assert out_labels("gpu_utilization_ratio * on (service) group_left (budget) budget_limit_dollars") == {
        "service", "gpu", "job", "instance", "budget"
    }
    assert out_labels("budget_spend_dollars / on (service, budget) budget_limit_dollars") == {"service", "budget"}


def test_ignoring_label_on_neither_side():
    [p] = problems("budget_spend_dollars / ignoring (route) budget_limit_dollars")
    assert "{route}" in p
    assert problems("http_requests_total / ignoring (status, method, route) budget_spend_dollars") != []
    assert problems("http_requests_total / ignoring (status, method, route) gpu_utilization_ratio") != []


def test_one_to_one_match_on_different_label_sets():
    [p] = problems("sum by (job, route) (rate(http_requests_total[5m])) / sum by (job) (rate(http_requests_total[5m]))")
    assert "one-to-one" in p
    assert problems("sum by (job) (rate(http_requests_total{status=~'5..'}[5m])) / sum by (job) (rate(http_requests_total[5m]))") == []
    assert problems("rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m])") == []


def test_unknown_metrics_disable_checks_but_scalars_do_not():
    assert problems("nvidia_smi_utilization_gpu_ratio * on (uuid) group_left (name) nvidia_smi_gpu_info") == []
    assert out_labels("nvidia_smi_utilization_gpu_ratio > 0.9") is None
    assert out_labels("budget_spend_dollars / (budget_limit_dollars > 0) > 0.8") == LABELS["budget_spend_dollars"]
    assert out_labels("up == 0") is None
    assert out_labels("vector(1)") == set()


def test_label_replace_and_join_add_and_read_labels():
    expr = 'sum by (svc) (label_replace(http_requests_total, "svc", "$1", "service", "(.*)"))'
    assert problems(expr) == [] and out_labels(expr) == {"svc"}
    [p] = problems('label_replace(http_requests_total, "svc", "$1", "nope", "(.*)")')
    assert "'nope'" in p
    assert out_labels('label_join(budget_spend_dollars, "k", "-", "service", "budget")') == LABELS["budget_spend_dollars"] | {"k"}


def test_absent_labels_come_from_equality_matchers():
    assert out_labels('absent(http_requests_total{job="api", status=~"5.."})') == {"job"}


def test_counter_gauge_and_bucket_uses():
    a = analyze("rate(http_requests_total[5m]) + deriv(budget_spend_dollars[1h])", lookup)
    assert [(f, s.name) for f, s in a.counter_uses] == [("rate", "http_requests_total")]
    assert [(f, s.name) for f, s in a.gauge_uses] == [("deriv", "budget_spend_dollars")]
    a = analyze("histogram_quantile(0.5, rate(http_request_duration_seconds_bucket[5m]))", lookup)
    assert [s.name for s in a.bucket_uses] == ["http_request_duration_seconds_bucket"]
