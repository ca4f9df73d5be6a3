"""Engine events to JSON and back, so UI tests can replay a real recorded conversation."""

import dataclasses
import json

from model.cache.state import CacheState
from model.distributed.info import StepTiming, cluster_from_dict
from model.runtime import events as ev
from model.runtime.stats import DraftCounts, PrefillStats, TurnStats

_TYPES = {
    cls.__name__: cls
    for cls in (
        ev.ModelLoading,
        ev.ModelReady,
        ev.ModelFailed,
        ev.TurnStarted,
        ev.PrefillProgress,
        ev.PrefillDone,
        ev.TokenGenerated,
        ev.TurnEnded,
        ev.TurnFailed,
        ev.ConversationReset,
        ev.InsideStep,
        ev.ClusterStep,
    )
}
_NESTED = {"cache": CacheState, "stats": None}


def encode(event) -> dict:
    data = {"type": type(event).__name__, **dataclasses.asdict(event)}
    if "attention" in data:  # 6 decimals keep each row's sum within 1e-4 of 1, and the file small
        data["attention"] = [[round(w, 6) for w in row] for row in data["attention"]]
        data["attention_mean"] = [round(w, 6) for w in data["attention_mean"]]
    return data


def decode(data: dict):
    data = dict(data)
    cls = _TYPES[data.pop("type")]
    if "cache" in data and data["cache"] is not None:
        data["cache"] = CacheState(**data["cache"])
    if "stats" in data:
        data["stats"] = (PrefillStats if cls is ev.PrefillDone else TurnStats)(**data["stats"])
    if "drafts" in data:
        data["drafts"] = DraftCounts(**data["drafts"])
    if "top_k" in data:
        data["top_k"] = tuple(ev.TopToken(**t) for t in data["top_k"])
    if "most_attended" in data:
        data["most_attended"] = tuple(ev.AttendedToken(**a) for a in data["most_attended"])
    if "lens" in data:
        data["lens"] = tuple(tuple(ev.TopToken(**t) for t in row) for row in data["lens"])
    if "attention" in data:
        data["attention"] = tuple(tuple(row) for row in data["attention"])
        data["attention_mean"] = tuple(data.get("attention_mean", ()))
    if "cluster" in data:  # a ClusterStep: the group, and its latest timed step
        data["cluster"] = cluster_from_dict(data["cluster"])
        data["timing"] = StepTiming(**data["timing"]) if data["timing"] is not None else None
    if "lens_layers" in data:
        data["lens_layers"] = tuple(data["lens_layers"])
    if "token_ids" in data:
        data["token_ids"] = tuple(data["token_ids"])
    return cls(**data)


def save(path, load_events, turns) -> None:
    path.write_text(
        json.dumps(
            {"load": [encode(e) for e in load_events], "turns": [[encode(e) for e in t] for t in turns]},
            ensure_ascii=False,
            separators=(",", ":"),
        )
    )


def load(path):
    data = json.loads(path.read_text())
    return [decode(e) for e in data["load"]], [[decode(e) for e in t] for t in data["turns"]]
