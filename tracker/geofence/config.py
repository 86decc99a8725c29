"""Fleet rules from a folder: every `*.yaml` / `*.yml` in it becomes `Fence` and `Rule` values.

Policy: a file that fails to parse or validate never takes effect. Its last good version stays in force and
its problems are reported as `file:line: path: reason`, the line taken from the YAML marks. Files are checked
on their own first (`rules_file.py`), then together (unique ids, rule references across files); a combined
set that fails that cross-check does not replace the set in force at all. Reading and parsing are
synchronous (the server runs them in a thread); `watch.py` only says when to reload.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tracker.errors import ConfigError
from tracker.geofence.rules_file import FileResult, duplicate_ids, parse_file
from tracker.model import Fence, FixFilter, Rule

RULE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The fences and rules to put in force, the current problems, and a sha256 of every file read."""

    fences: tuple[Fence, ...] = ()
    rules: tuple[Rule, ...] = ()
    errors: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    filters: tuple[FixFilter, ...] = ()


class FenceLoader:
    """Reloads a geofences folder, keeping the last good version of each file and the last good whole set."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # the newest parse of each file, reused while the file and its GeoJSON files are unchanged
        self._parsed: dict[str, FileResult] = {}
        self._good: dict[str, FileResult] = {}  # last version of each file that was valid on its own
        self._in_force = LoadResult()

    def _parse(self, path: Path) -> FileResult:
        key = str(path)
        cached = self._parsed.get(key)
        if cached is not None and cached.is_current():
            return cached
        self._parsed[key] = result = parse_file(path)
        return result

    def load(self) -> LoadResult:
        """Re-read the folder (synchronously) and return the set to put in force with the current problems.

        The problems are returned, not logged: the caller reports them where users look.
        """
        paths = _rule_files(self.folder)
        keys = [str(p) for p in paths]
        errors: list[str] = []
        files: dict[str, str] = {}
        for path, key in zip(paths, keys, strict=True):
            parsed = self._parse(path)
            files.update({dep: sha for dep, sha in parsed.deps.items() if sha is not None})
            errors.extend(parsed.errors)
            if not parsed.errors:
                self._good[key] = parsed
        for gone in set(self._good) - set(keys):
            del self._good[gone]
        for gone in set(self._parsed) - set(keys):
            del self._parsed[gone]
        good = [self._good[k] for k in keys if k in self._good]
        fences, rules, cross = _combine(good)
        if cross:
            kept = self._in_force
            return LoadResult(kept.fences, kept.rules, (*errors, *cross), files, kept.filters)
        filters = tuple(f for r in good for f in r.filters)
        self._in_force = LoadResult(fences, rules, (), files, filters)
        return LoadResult(fences, rules, tuple(errors), files, filters)


def load_folder(folder: Path) -> LoadResult:
    """Every rules file of `folder` loaded once, as a fresh `FenceLoader` would (no earlier set to keep)."""
    return FenceLoader(folder).load()


def check_folder(folder: Path) -> list[str]:
    """The problems of every rules file of `folder` as `file:line: reason` (empty when all are valid).

    Raises ConfigError when `folder` is not a folder.
    """
    if not folder.is_dir():
        raise ConfigError(f"geofences folder '{folder}' does not exist or is not a folder")
    return list(load_folder(folder).errors)


def combine_posted(result: FileResult, in_force: Sequence[Fence]) -> LoadResult:
    """A posted rules file (`rules_file.parse_text`) made ready to evaluate: its rules name its own fences
    and, by id or tag, the fences `in_force` on the server (its own win on a shared id), so that a new
    rule can be tried on the fences a server has. `fences` holds its own and the ones in force that its
    rules name; `errors`, as `geofences check` words them, leave it without fences and rules."""
    if result.errors:
        return LoadResult(errors=result.errors)
    fences, rules, errors = _combine([result], in_force)
    if errors:
        return LoadResult(errors=tuple(errors))
    own = {f.id for f in fences}
    named = {fid for r in rules for fid in r.fences}
    extra = tuple(f for f in in_force if f.id in named and f.id not in own)
    return LoadResult(fences + extra, rules)


def _rule_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.suffix in RULE_SUFFIXES and p.is_file()), key=lambda p: p.name
    )


def _combine(
    results: Sequence[FileResult], known: Sequence[Fence] = ()
) -> tuple[tuple[Fence, ...], tuple[Rule, ...], list[str]]:
    """The combined fences and resolved rules of files that are each valid, and the cross-check's errors;
    rules may also name `known` fences (by id or tag) that no file defines."""
    entries = [e for r in results for e in r.entries]
    drafts = [d for r in results for d in r.drafts]
    errors = duplicate_ids(entries, drafts)
    fences = tuple(f for e in entries for f in e.fences)
    own = {f.id for f in fences}
    usable = fences + tuple(f for f in known if f.id not in own)
    order = {f.id: i for i, f in enumerate(usable)}
    by_name: dict[str, list[str]] = {f.id: [f.id] for f in usable}
    by_name.update({e.id: [f.id for f in e.fences] for e in entries})
    by_tag: dict[str, list[str]] = {}
    for f in usable:
        for tag in f.tags:
            by_tag.setdefault(tag, []).append(f.id)
    rules: list[Rule] = []
    for draft in drafts:
        chosen: set[str] = set()
        for ref in draft.refs:
            found = (by_name if ref.kind == "id" else by_tag).get(ref.name)
            if found:
                chosen.update(found)
            elif ref.kind == "id":
                errors.append(f"{ref.at}: unknown fence '{ref.name}'")
            else:
                errors.append(f"{ref.at}: no fence has tag '{ref.name}'")
        if not draft.refs and draft.rule.on != "near":
            errors.append(f"{draft.label}: fences and fence_tags select no fence")
        rules.append(dataclasses.replace(draft.rule, fences=tuple(sorted(chosen, key=order.__getitem__))))
    return fences, tuple(rules), errors
