"""What the student learns, shared by train (SFT) and synth (Table 1 statistics: PPL, counts).

- ``messages``: the conversation of one record (the instruction, then the trace verbatim and the response);
- ``tokenize``: its token ids with labels -100 everywhere but the assistant turn;
- ``end_of_turn``: what closes an assistant turn in the tokenizer's chat template;
- ``rendered_lengths``: tokens of the assistant turn and of its trace (Table 1's count, trace budgets);
- ``component_counts``: Table 1's count rule (a domain's count split equally among its components).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from core import think


class MixtureError(ValueError):
    """Bad mixture input: names the component, where it looked, and the fix."""


def component_counts(cfg: DictConfig) -> dict[str, int]:
    """Training examples per component: the domain's count split equally among its components (the paper:
    "学習事例数はドメインごとに一定とし、日英を併用する構成では各言語に等分する")."""
    domain_counts = dict(cfg.experiment.domain_counts)
    by_domain: dict[str, list[str]] = {}
    for name, comp in cfg.data.items():
        by_domain.setdefault(comp.domain, []).append(name)
    counts = {}
    for domain, names in by_domain.items():
        if domain not in domain_counts:
            raise MixtureError(
                f"experiment {cfg.experiment.name}: component(s) {names} are {domain!r} data but "
                f"experiment.domain_counts has no {domain!r} entry ({domain_counts})"
            )
        total = domain_counts[domain]
        if total % len(names):
            raise MixtureError(
                f"experiment {cfg.experiment.name}: {domain} count {total} does not split equally "
                f"among {len(names)} components {names}"
            )
        counts.update({n: total // len(names) for n in names})
    return counts


def messages(record: dict[str, Any], keep_trace: bool, no_trace: str) -> list[dict[str, str]]:
    """The conversation the student learns: the instruction, then the trace (verbatim) and the response."""
    trace = record.get("trace") if keep_trace else None
    return [
        {"role": "user", "content": record["instruction"]},
        {"role": "assistant", "content": think.format_assistant(trace, record["response"], no_trace)},
    ]


def tokenize(example: dict[str, Any], tokenizer, eos: str) -> dict[str, list[int]]:
    """Token ids of one conversation with labels -100 everywhere but the assistant turn.

    The prompt goes through the model's own chat template (generation prompt included); the assistant
    turn is appended as text we rendered ourselves. We do not let the template render the assistant
    turn because Qwen3's template rewrites think content (strips newlines, inserts empty think blocks
    into trace-free turns) and TRL would swap in its own training template; this way the trace reaches
    the student verbatim and the label mask is exact by construction.
    """
    prompt_ids = tokenizer.apply_chat_template(
        example["messages"][:-1], tokenize=True, add_generation_prompt=True, return_dict=False
    )
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
        prompt_ids = prompt_ids["input_ids"]
    completion = example["messages"][-1]["content"] + eos
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return {
        "input_ids": list(prompt_ids) + completion_ids,
        "labels": [-100] * len(prompt_ids) + completion_ids,
    }


def end_of_turn(tokenizer) -> str:
    """What closes an assistant turn in this tokenizer's chat template (``<|im_end|>\\n`` for Qwen)."""
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "SENTINEL"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    tail = text.split("SENTINEL", 1)[1]
    return tail or (tokenizer.eos_token or "")


def rendered_lengths(tokenizer: Any, pairs: Sequence[tuple[str | None, str]],
                     keep_trace: bool = True) -> list[tuple[int, int]]:
    """For each (trace, response): (tokens of the assistant turn the student learns, of them the tokens that
    hold a character of the trace).

    The turn is ``core.think.format_assistant(trace, response)`` (the bare response without ``keep_trace``),
    tokenized without special tokens: Table 1's count. The trace's tokens come from the same tokenization
    (``BatchEncoding.char_to_token``: the tokens holding its first and last characters), so the second count
    costs no second tokenization and no offset lists (bench/results/synth_checks.md). It equals tokenizing
    the trace alone but where a token spans one of the trace's edges (Qwen3 makes the trace's last ``.`` and
    the newline after it one token, counted as the trace's): 1 or 2 tokens more or fewer on a few % of
    records."""
    if not pairs:
        return []
    texts = [think.format_assistant(t if keep_trace else None, r) for t, r in pairs]
    enc = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)
    out = []
    for i, (text, (trace, _)) in enumerate(zip(texts, pairs)):
        n_trace = 0
        if keep_trace and trace:
            a = text.index(trace, len(think.OPEN))  # format_assistant keeps the trace verbatim after the tag
            first, last = enc.char_to_token(i, a), enc.char_to_token(i, a + len(trace) - 1)
            if first is None or last is None:  # a character no token holds (a normalizer dropped it)
                n_trace = len(tokenizer(trace, add_special_tokens=False)["input_ids"])
            else:
                n_trace = last - first + 1
        out.append((len(enc["input_ids"][i]), n_trace))
    return out
