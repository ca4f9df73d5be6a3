"""A saved conversation as Markdown (the path shown), with its settings and per-turn numbers as front
matter, or as JSON (the whole tree: every message with its parent)."""

import json
from datetime import datetime, timezone

from .store import Store


def conversation_markdown(store: Store, conversation_id: int) -> str:
    info = store.conversation(conversation_id)
    messages = store.path_to(conversation_id)
    turns = [m.stats for m in messages if m.role == "assistant" and m.stats]
    front = {
        "title": info["title"],
        "model": info["model"],
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "system_prompt": info["system_prompt"],
        "settings": info["settings"],
        "turns": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in t.items()} for t in turns],
    }
    # JSON is valid YAML, so the front matter reads back with either parser.
    lines = ["---"] + [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in front.items()] + ["---", ""]
    lines.append(f"# {info['title']}\n")
    for m in messages:
        heading = {"user": "User", "assistant": "Assistant", "system": "System"}.get(m.role, m.role)
        if m.status == "cancelled":
            heading += " (stopped)"
        lines.append(f"## {heading}\n\n{m.content}\n")
    return "\n".join(lines)


def conversation_json(store: Store, conversation_id: int) -> dict:
    """Every message, each with its parent, so every branch is there; `current` is the path shown."""
    info = store.conversation(conversation_id)
    fields = ("id", "parent_id", "role", "content", "token_ids", "status", "forked_at", "token_forced", "stats")
    return {
        **info,
        "current": store.current_message(conversation_id),
        "messages": [{f: getattr(m, f) for f in fields} for m in store.messages(conversation_id)],
    }
