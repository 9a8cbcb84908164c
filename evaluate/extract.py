"""Answer extraction shared by the tasks: math (``math-verify``) and multiple-choice letters.

Both take the paper-policy answer text (the response, or the trace when ``</think>`` never closed),
so they must find an answer in long, messy reasoning as well as in a clean final line.
"""

from __future__ import annotations

import re
import unicodedata

from math_verify import parse as mv_parse
from math_verify import verify as mv_verify


# ---------------------------------------------------------------- math
def math_gold(answer: str):
    """Parse a gold answer as LaTeX (MATH-500 and AIME golds are bare LaTeX such as ``\\frac{14}{3}``)."""
    gold = mv_parse(f"${answer}$")
    return gold if gold else mv_parse(answer)


def math_grade(text: str, gold_answer: str) -> tuple[bool, str | None]:
    """(correct?, extracted answer) with math-verify: boxed answers first, then 'answer is …', then the last expression."""
    if not text.strip():
        return False, None
    pred = mv_parse(text)
    if not pred:
        return False, None
    return bool(mv_verify(math_gold(gold_answer), pred)), str(pred[-1])


# ---------------------------------------------------------------- multiple choice
_FULLWIDTH = str.maketrans({chr(0xFF21 + i): chr(0x41 + i) for i in range(26)})  # Ａ..Ｚ → A..Z


def normalize(text: str) -> str:
    """NFKC folds full-width letters, digits, brackets and colons (Ａ（Ｂ）：) to ASCII."""
    return unicodedata.normalize("NFKC", text).translate(_FULLWIDTH)


# The letter of an answer statement: after optional Markdown, `$` and an opening bracket (NFKC has folded
# （ to "("), a capital not followed by more word characters ("Answer: Cytochrome" names no letter).
_LETTER = r"[*_`$\s]*[(\[【]?\s*([A-Z])(?![A-Za-z0-9])"
_VERDICT = r"\s*(?:(?i:is\s+(?:the\s+)?(?:correct|right|best|answer))|が(?:正しい|正解|答え))"  # "… is correct", "…が正しい"
_BOXED = r"\\boxed\{\s*\\?(?:text(?:bf)?\{)?\s*\(?([A-Z])\)?\s*\}?\s*\}"  # \boxed{C}, \boxed{\text{(C)}}
# An answer STATEMENT, not a mention: an answer word joined to the letter by "is" / ":" / "は" ("the answer
# is C", "**Answer:** (C)", "正解は C", "答え：選択肢C"), or an option declared correct ("option B is
# correct", "(B) is the answer", "選択肢Bが正しい"). "Option D is about…", "answer choice D", "Dは誤り" name
# a letter without answering with it.
_STATEMENTS = [
    r"(?i:final\s+answer|answer|(?:correct|right|best)\s+(?:answer|option|choice|completion|one)|正解|答え|解答|回答)"
    r"[*_\s]*(?i:is|would\s+be|should\s+be|must\s+be|:|は|=|→)\s*(?i:option|choice|選択肢)?" + _LETTER,
    r"(?i:option|choice|選択肢)\s*[(\[]?([A-Z])[)\]]?" + _VERDICT,
    r"[(\[]([A-Z])[)\]]" + _VERDICT,
]
# Without any statement, a letter standing as an answer: a line holding only a letter ("C", "**(C)**",
# "C."), or a bold or bracketed letter that ends its sentence ("I'd go with (B).", "**D**."). A bracketed
# letter that starts a discussion ("(B) is wrong", "**D)** W bosons") is a mention.
_STANDALONE = [
    r"^[\s*_#>`]*[(\[【]?([A-Z])[)\]】]?[\s*_`.:。]*$",
    r"(?:\*\*\s*[(\[]?([A-Z])[)\]]?[\s.:]*\*\*|[(\[【]([A-Z])[)\]】])[\s*_`]*(?=[.。!！]|\n)",
]
# A statement inside a condition or a question is a hypothesis: "if / whether / suppose the answer is D",
# "the answer is D?", "答えはDかどうか", "答えはDなら".
_HYPOTHESIS_BEFORE = re.compile(r"(?i:\b(?:if|whether|suppose|supposing|assume|assuming|unless)\b)|もし")
_HYPOTHESIS_AFTER = re.compile(r"[)\]】*_\s]*(?:[?？]|(?:です|だ)?(?:か(?:どうか|[?？。])|なら|とすると|とすれば|だとすると|だとしたら|としたら))")


def _asserted(text: str, m: re.Match) -> bool:
    clause = re.split(r"[.。!?！？;；,、\n]", text[: m.start()])[-1]
    return not _HYPOTHESIS_BEFORE.search(clause) and not _HYPOTHESIS_AFTER.match(text, m.end())


def _last_letter(patterns: list[str], text: str, valid: set[str], flags=0) -> str | None:
    """The letter of the LAST match of any of ``patterns`` (models restate their final choice at the end)."""
    hits = []
    for pattern in patterns:
        for m in re.finditer(pattern, text, flags):
            letter = m.group(m.lastindex)
            if letter in valid and _asserted(text, m):
                hits.append((m.start(), letter))
    return max(hits)[1] if hits else None


def extract_choice(text: str, letters: str) -> str | None:
    """The chosen letter among ``letters`` (e.g. "ABCD"), or None.

    Robust to Markdown bold, parentheses and brackets, "Answer:"/"The answer is", Japanese
    "答え：" / "正解は", \\boxed{}, and full-width letters. In order, the first that finds a letter wins:
    the last \\boxed{} letter; the last answer statement; the last letter standing alone as an answer.
    Letters only mentioned (an option discussed after the stated answer, a hypothesis) are not answers,
    which matters for truncated traces that run on past their answer.
    """
    t = normalize(text)
    valid = set(letters)
    return (_last_letter([_BOXED], t, valid) or _last_letter(_STATEMENTS, t, valid)
            or _last_letter(_STANDALONE, t, valid, re.MULTILINE))


# ---------------------------------------------------------------- code
def extract_code(text: str) -> str:
    """The last fenced code block (parsed as Markdown by markdown-it, as swallow-evaluation-instruct
    does, so backticks inside prose do not confuse it); the whole text when there is none."""
    from markdown_it import MarkdownIt

    blocks = [t.content for t in MarkdownIt().parse(text) if t.type == "fence"]
    return blocks[-1] if blocks else text


LETTERS = "ABCDEFGHIJKLMNOP"


def format_options(options: list[str]) -> tuple[str, str]:
    """("A) first\\nB) second…", "A, B, …") for a prompt."""
    letters = LETTERS[: len(options)]
    return "\n".join(f"{l}) {o}" for l, o in zip(letters, options)), ", ".join(letters)
