"""The planner's forms: the pages use them, and the API validates drafts with them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings

from fleet.git import paths
from fleet.models import Budget, Plan, Repository, SharedFile, Task, Wave
from fleet.models.work import MAX_MERGE_BATCH

MAX_DECLARED = 500


# A declared path as the API's schema publishes it: a canonical glob (see
# fleet.git.paths) that does not start with "#" (see declared_path).
DECLARED_PATTERN = "^(?!#)" + paths.GLOB_PATTERN.removeprefix("^")


def declared_path(path: str) -> str:
    """A declared path's one spelling (a file, a directory or a glob), or
    ``PathRefused``. The form reads a line starting with ``#`` as a comment, so a
    path spelled that way would vanish the next time the task is edited: refused."""
    path = paths.canonical(path, glob=True)
    if path.startswith("#"):
        raise paths.PathRefused(f"{path!r} starts with #, which the planner reads as a comment")
    return path


def clean_declared(value: str | list) -> list[str]:
    """Declared paths, each in its one spelling (``declared_path``), repeats dropped:
    a page's text one per line (blank lines and ``#`` comments skipped, each line
    stripped), or an API draft's list taken item by item as it is."""
    typed = not isinstance(value, list)
    items = str(value).splitlines() if typed else value
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise forms.ValidationError("Each declared path is a string.")
        if typed:
            item = item.strip()
            if not item or item.startswith("#"):
                continue
        try:
            path = declared_path(item)
        except paths.PathRefused as exc:
            raise forms.ValidationError(f"{exc}.") from None
        if path not in out:
            out.append(path)
    if len(out) > MAX_DECLARED:
        raise forms.ValidationError(f"At most {MAX_DECLARED} declared paths per task.")
    return out


class DeclaredPathsField(forms.CharField):
    """The page's textarea (one path per line), or the API draft's list kept a list:
    joined into lines, a path holding a line separator would become two paths."""

    def to_python(self, value):
        return list(value) if isinstance(value, list | tuple) else super().to_python(value)


class PlanForm(forms.ModelForm):
    class Meta:
        model = Plan
        fields = ["name", "slug", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}


class WaveForm(forms.ModelForm):
    class Meta:
        model = Wave
        fields = ["name"]
        help_texts = {"name": "e.g. Foundation, Features, Integration"}


class TaskForm(forms.ModelForm):
    repository = forms.ModelChoiceField(
        Repository.objects.order_by("name"), to_field_name="slug", empty_label=None
    )
    declared_paths = DeclaredPathsField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="One path or glob per line, relative to the repository root "
        "(src/**/*.py, docs/, config/settings.py).",
    )
    spec = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Requirements and acceptance criteria.",
    )

    class Meta:
        model = Task
        fields = ["key", "kind", "title", "repository", "spec", "declared_paths", "read_only"]

    def __init__(self, *args, locked: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["declared_paths"] = "\n".join(self.instance.declared_paths or [])
            self.initial["repository"] = self.instance.repository.slug
            self.fields["key"].disabled = True
        if locked:  # approved: only the title and spec change (the spec gets a new version)
            for name in ("kind", "repository", "declared_paths", "read_only"):
                self.fields[name].disabled = True

    def clean_declared_paths(self) -> list[str]:
        value = self.cleaned_data.get("declared_paths")
        if self.fields["declared_paths"].disabled:
            return list(self.instance.declared_paths or [])
        return clean_declared(value or "")


class DecisionForm(forms.Form):
    strategy = forms.ChoiceField(choices=SharedFile.STRATEGY_CHOICES[1:])
    task = forms.CharField(max_length=20, help_text="the task that owns (or keeps) the path")


class MoveForm(forms.Form):
    wave = forms.IntegerField(min_value=1, help_text="the wave number to move the task to")


class BudgetForm(forms.Form):
    limit_usd = forms.DecimalField(
        label="Limit (USD)",
        required=False,
        min_value=Decimal("0.01"),
        max_digits=12,
        decimal_places=2,
    )
    limit_tokens = forms.IntegerField(
        label="Limit (tokens)", required=False, min_value=1, max_value=10**15
    )

    def clean(self):
        data = super().clean()
        limits = ("limit_usd", "limit_tokens")
        # A limit given but invalid has its own error; this one is for none given.
        if all(data.get(f) is None and f not in self.errors for f in limits):
            raise forms.ValidationError("Set a limit in USD, in tokens, or both.")
        return data

    def save(self, target: Any = None, *, scope: str = "wave", by: Any) -> Budget:
        """Set the caps of ``target``'s budget (a wave's unless told), audited."""
        from fleet import budgets

        return budgets.set_cap(
            scope=scope,
            target=target,
            limit_usd=self.cleaned_data["limit_usd"],
            limit_tokens=self.cleaned_data["limit_tokens"],
            by=by,
        )


# What a cap can be set on from the budget page, and who may: managers any scope,
# leads their waves (as on a wave's page).
CAP_SCOPES = ("fleet", "repository", "wave", "agent")


class CapForm(BudgetForm):
    """The budget page's cap: one scope's target (the fleet, a repository, a wave or
    an agent), picked from one list grouped by scope, and its limits."""

    target = forms.ChoiceField(label="Cap on")
    field_order = ["target", "limit_usd", "limit_tokens"]

    def __init__(self, *args: Any, scopes: tuple[str, ...] = CAP_SCOPES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scopes = scopes
        choices: list = []
        if "fleet" in scopes:
            choices.append(("fleet:", "the whole fleet"))
        if "repository" in scopes:
            choices.append(
                (
                    "Repositories",
                    [(f"repository:{r.slug}", r.slug) for r in Repository.objects.order_by("slug")],
                )
            )
        if "wave" in scopes:
            waves = Wave.objects.select_related("plan").exclude(status=Wave.VERIFIED)
            choices.append(
                (
                    "Waves",
                    [
                        (f"wave:{w.pk}", f"{w.plan.name} · wave {w.number} ({w.status})")
                        for w in waves.order_by("plan__name", "number")
                    ],
                )
            )
        if "agent" in scopes:
            from fleet.models import Agent

            choices.append(
                (
                    "Agents",
                    [
                        (f"agent:{a.name}", f"{a.name} ({a.status})")
                        for a in Agent.objects.order_by("name")
                    ],
                )
            )
        self.fields["target"].choices = choices

    def clean_target(self) -> tuple[str, Any]:
        """("wave", <Wave>) from "wave:12"; a scope this person may not cap is an error."""
        from fleet.models import Agent

        scope, _, key = self.cleaned_data["target"].partition(":")
        if scope not in self.scopes:
            raise forms.ValidationError(f"You may not set a cap on a {scope}.")
        if scope == "fleet":
            return scope, None
        model, field = {
            "repository": (Repository, "slug"),
            "wave": (Wave, "pk"),
            "agent": (Agent, "name"),
        }[scope]
        target = model.objects.filter(**{field: key}).first() if key else None
        if target is None:
            raise forms.ValidationError(f"There is no {scope} {key!r}.")
        return scope, target

    def save(self, *, by: Any) -> Budget:  # type: ignore[override]
        scope, target = self.cleaned_data["target"]
        return super().save(target, scope=scope, by=by)


class MergeBatchForm(forms.Form):
    """How many queued tasks a repository's merge queue tests together."""

    merge_batch_size = forms.IntegerField(
        label="Batch size", min_value=1, max_value=MAX_MERGE_BATCH
    )


class ApproveForm(forms.Form):
    override_reason = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Only when approving before the previous wave is verified (audited).",
    )
    crowd_reason = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=f"Only when the wave runs more than {settings.FLEET_WAVE_SOFT_LIMIT} agents.",
    )
