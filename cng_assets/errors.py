"""The one error type for bad input: it names what is wrong, where, and what to do."""

from __future__ import annotations


class CngInputError(Exception):
    def __init__(self, problem: str, *, dataset: str | None = None, layer: str | None = None,
                 feature: int | str | None = None, hint: str | None = None):
        self.problem, self.dataset, self.layer, self.feature, self.hint = problem, dataset, layer, feature, hint
        super().__init__(str(self))

    def where(self, *, dataset: str | None = None, layer: str | None = None) -> CngInputError:
        """Fill in context known only to the caller (transforms do not know the dataset name)."""
        self.dataset = self.dataset or dataset
        self.layer = self.layer or layer
        self.args = (str(self),)
        return self

    def __str__(self) -> str:
        place = ", ".join(
            f"{k} {v!r}" if k != "feature" else f"feature {v}"
            for k, v in (("dataset", self.dataset), ("layer", self.layer), ("feature", self.feature))
            if v is not None
        )
        text = f"{place}: {self.problem}" if place else self.problem
        return f"{text}. What to do: {self.hint}" if self.hint else text


def no_crs(what: str, example: str, layer: str | None = None) -> CngInputError:
    """A layer or raster whose source declares no CRS, and the two ways to give it one."""
    return CngInputError(f"the {what} declares no CRS", layer=layer,
                         hint=f"if you know it, set `crs:` (e.g. {example}) in the dataset's catalog entry, "
                              f"or pass `--crs {example}` to `cng-assets run`")
