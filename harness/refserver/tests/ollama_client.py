"""Drives an Ollama-compatible server with the official Ollama Python client (PyPI `ollama`)
and prints, as one JSON object on stdout, what the client got back; tests/ollama_client.rs
checks it.

    python ollama_client.py HOST MODEL [MODEL ...]

For each model: a two-turn chat (the second turn streamed, sending the first answer back as
the assistant message), then `show` and `ps`.
"""
import importlib.metadata
import json
import sys

import ollama


def turn_figures(r):
    return {
        "content": r.message.content,
        "role": r.message.role,
        "done": r.done,
        "done_reason": r.done_reason,
        "prompt_eval_count": r.prompt_eval_count,
        "prompt_eval_duration": r.prompt_eval_duration,
        "eval_count": r.eval_count,
    }


def main():
    host, models = sys.argv[1], sys.argv[2:]
    client = ollama.Client(host=host, timeout=180)
    out = {"client": importlib.metadata.version("ollama"), "models": {}}
    options = {"num_ctx": 2048, "num_predict": 16, "temperature": 0, "seed": 7}
    for model in models:
        messages = [{"role": "user", "content": "Name the three primary colours of paint."}]
        first = client.chat(model=model, messages=messages, options=options)
        messages.append({"role": "assistant", "content": first.message.content})
        messages.append({"role": "user", "content": "Which one of them is the colour of a clear sky?"})
        text, last = "", None
        for chunk in client.chat(model=model, messages=messages, options=options, stream=True):
            text += chunk.message.content or ""
            last = chunk
        second = turn_figures(last)
        second["content"] = text
        show = client.show(model)
        ps = client.ps()
        out["models"][model] = {
            "turns": [turn_figures(first), second],
            "show": {
                "template": show.template,
                "parameters": show.parameters,
                "family": show.details.family if show.details else None,
                "model_info_keys": sorted((show.modelinfo or {}).keys()),
                "capabilities": show.capabilities,
            },
            "ps": [
                {
                    "name": m.name,
                    "model": m.model,
                    "size": int(m.size or 0),
                    "context_length": m.context_length,
                    "expires_at": m.expires_at.isoformat() if m.expires_at else None,
                }
                for m in ps.models
            ],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
