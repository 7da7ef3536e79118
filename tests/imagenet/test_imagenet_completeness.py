"""Integrated Gradients' completeness error below the bar at the default steps: EfficientNet-Lite0 on the sample
photographs and the shapes classifier on held-out images (the figures ``model_store.evaluate`` prints)."""

from __future__ import annotations

import torch

from handlers.engine import Explainer, MethodParams
from model_store import completeness, data, zoo
from model_store.evaluate import EVAL_START


def test_photographs_at_the_default_steps() -> None:
    report = completeness.photographs_report()
    assert report.params == MethodParams()  # 50 Gauss-Legendre steps, black baseline
    assert len(report.errors) == 4
    assert report.worst < completeness.BAR, report.lines(each=True)
    # two steps are far from complete: the figure does measure something
    coarse = completeness.photographs_report(MethodParams(steps=2, rule="riemann_right"))
    assert coarse.worst > 5 * report.worst


def test_shapes_classifier_at_the_default_steps() -> None:
    torch.manual_seed(0)
    model = zoo.build("shapes-classifier")
    batch = data.make_batch("test", EVAL_START, 40)
    explainer = Explainer(model, labels=data.SHAPE_CLASSES, input_size=(data.DEFAULT_SIZE, data.DEFAULT_SIZE))
    names = [str(i) for i in range(len(batch))]
    report = completeness.completeness(
        "shapes-classifier", explainer, data.to_tensor(batch.images), batch.labels.tolist(), names
    )
    assert report.worst < completeness.BAR, report.lines(each=True)
    assert report.lines(each=False)[0].endswith(f"(below {completeness.BAR})")
