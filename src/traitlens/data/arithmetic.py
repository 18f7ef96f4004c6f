"""A seeded generator of arithmetic and one-step word problems with integer answers.

Written here rather than taken from reasoning-gym, which would pull sympy and matplotlib into
every install for a few templates; the problems are deterministic for a seed.
"""

from __future__ import annotations

import random

NAMES = ("Ava", "Ben", "Carla", "Deepak", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas")
THINGS = ("apples", "marbles", "books", "stickers", "coins", "pencils", "cards", "shells")

# (template, operation). Each template reads naturally for its operation's operands.
WORD_PROBLEMS = (
    ("{name} has {a} {things} and gets {b} more. How many {things} does {name} have now?", "+"),
    ("{name} had {a} {things} and gave away {b}. How many {things} are left?", "-"),
    ("{name} buys {a} boxes with {b} {things} in each. How many {things} is that in all?", "*"),
    ("{name} shares {a} {things} equally among {b} friends. How many {things} does each friend get?", "/"),
)


# Operand ranges per level: (addition and subtraction, multiplication, divisor, quotient).
# "easy" is sized so that a small base model answers a fair share: two-digit sums, times tables.
LEVELS = {"standard": ((2, 999), (2, 40), (2, 12), (2, 40)), "easy": ((2, 99), (2, 12), (2, 9), (2, 12))}
SYMBOL = {"+": "+", "-": "-", "*": "x", "/": "/"}


def _operands(rng: random.Random, op: str, level: str = "standard") -> tuple[int, int, int]:
    (low, high), (m_low, m_high), (d_low, d_high), (q_low, q_high) = LEVELS[level]
    if op == "+":
        a, b = rng.randint(low, high), rng.randint(low, high)
        return a, b, a + b
    if op == "-":
        a, b = sorted((rng.randint(low, high), rng.randint(low, high)), reverse=True)
        return a, b, a - b
    if op == "*":
        a, b = rng.randint(m_low, m_high), rng.randint(m_low, m_high)
        return a, b, a * b
    b, answer = rng.randint(d_low, d_high), rng.randint(q_low, q_high)  # division always comes out even
    return answer * b, b, answer


def generate(count: int, seed: int, exclude: set[str] = frozenset(), level: str = "standard",
             worked: bool = False) -> list[dict]:
    """`count` distinct problems. `worked`: the answer shows the operation before the result
    ("23 + 45 = 68. The answer is 68.") instead of the number alone: the same questions with
    long answers, for contrasts of answer length."""
    rng = random.Random(seed)
    rows, seen = [], set(exclude)
    while len(rows) < count:
        if rng.random() < 0.5:
            op = rng.choice("+-*/")
            a, b, answer = _operands(rng, op, level)
            question = f"What is {a} {SYMBOL[op]} {b}?"
        else:
            template, op = rng.choice(WORD_PROBLEMS)
            a, b, answer = _operands(rng, op, level)
            question = template.format(name=rng.choice(NAMES), things=rng.choice(THINGS), a=a, b=b)
        if question not in seen:
            seen.add(question)
            text = f"{a} {SYMBOL[op]} {b} = {answer}. The answer is {answer}." if worked else str(answer)
            rows.append({"id": f"{seed}-{len(rows)}", "input": question, "answer": text})
    return rows


def arithmetic_splits(level: str = "standard", worked: bool = False) -> dict[str, list[dict]]:
    train = generate(4000, seed=0, level=level, worked=worked)
    return {"train": train, "test": generate(1000, seed=1, exclude={r["input"] for r in train}, level=level,
                                             worked=worked)}
