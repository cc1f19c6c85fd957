"""scikit-learn tweaks: an estimator's keyword (C, alpha, max_iter) scaled, or written out from
the estimator's default when the constructor leaves it out."""

from __future__ import annotations

from functools import partial

import libcst as cst

from jobs.tune.tweaks.layout import with_keyword
from jobs.tune.tweaks.numeric import Change, format_number
from jobs.tune.tweaks.source import Done, Rewrite, Site, Source, callee, keyword as keyword_arg, rewritten

# scikit-learn defaults, used when an estimator that takes the parameter does not set it.
C_DEFAULTS = {"LogisticRegression": 1.0, "SVC": 1.0, "SVR": 1.0, "LinearSVC": 1.0, "LinearSVR": 1.0}
ALPHA_DEFAULTS = {
    "Ridge": 1.0, "RidgeClassifier": 1.0, "Lasso": 1.0, "ElasticNet": 1.0,
    "SGDClassifier": 0.0001, "SGDRegressor": 0.0001,
}
MAX_ITER_DEFAULTS = {
    "LogisticRegression": 100, "SGDClassifier": 1000, "SGDRegressor": 1000, "Lasso": 1000,
    "ElasticNet": 1000, "LinearSVC": 1000, "LinearSVR": 1000,
}


def estimator_keyword(
    src: Source, keyword: str, defaults: dict[str, int | float], change: Change, header: str,
) -> Rewrite | None:
    """`keyword=` in estimator constructors (CapWords calls, so also inside Pipeline or
    GridSearchCV) changed; estimators in `defaults` that leave it out get it, from the default."""
    sites: list[Site] = []
    additions: list[tuple[cst.Call, str, int | float, int | float]] = []
    for call in src.calls:
        estimator = callee(call)
        if not estimator[:1].isupper():
            continue
        arg = keyword_arg(call, keyword)
        if arg is not None:
            if site := src.site(arg.value):
                sites.append(Site(site.node, site.subject or estimator))
        elif estimator in defaults and not any(a.star == "**" for a in call.args):
            if (new := change(defaults[estimator])) is not None:
                additions.append((call, estimator, defaults[estimator], new))
    edits, done = src.change_sites(sites, change)
    for call, estimator, default, new in additions:
        text = format_number(new)
        edits[id(call)] = partial(with_keyword, name=keyword, value=text)
        done.append(Done(src.line(call), default, new, f"{estimator} default", f", added {keyword}={text}"))
    return rewritten(src, header, edits, done)
