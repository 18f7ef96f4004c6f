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


def _operands(rng: random.Random, op: str) -> tuple[int, int, int]:
    if op == "+":
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        return a, b, a + b
    if op == "-":
        a, b = sorted((rng.randint(2, 999), rng.randint(2, 999)), reverse=True)
        return a, b, a - b
    if op == "*":
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        return a, b, a * b
    b, answer = rng.randint(2, 12), rng.randint(2, 40)  # division always comes out even
    return answer * b, b, answer


def generate(count: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set(exclude)
    while len(rows) < count:
        if rng.random() < 0.5:
            op = rng.choice("+-*/")
            a, b, answer = _operands(rng, op)
            question = f"What is {a} {'x' if op == '*' else op} {b}?"
        else:
            template, op = rng.choice(WORD_PROBLEMS)
            a, b, answer = _operands(rng, op)
            question = template.format(name=rng.choice(NAMES), things=rng.choice(THINGS), a=a, b=b)
        if question not in seen:
            seen.add(question)
            rows.append({"id": f"{seed}-{len(rows)}", "input": question, "answer": str(answer)})
    return rows


def arithmetic_splits() -> dict[str, list[dict]]:
    train = generate(4000, seed=0)
    return {"train": train, "test": generate(1000, seed=1, exclude={r["input"] for r in train})}
