"""The starter corpus: a seeded "support desk" chat set the project generates itself (nothing is downloaded).

`support_known.jsonl` holds the intents the starter model is trained on; `support_new.jsonl` holds
intents that only show up later in production traffic, so a refresh has something to learn.
Each intent has one canonical answer (with a slot for shipping), and users ask in many phrasings.

    python -m corral.data.starter.generate        # rewrites the two files next to this module
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from corral.data.rows import assign_split

SEED = 20240601
HERE = Path(__file__).parent
SHIPPING_DAYS = {
    "Germany": 2,
    "France": 3,
    "Spain": 4,
    "Italy": 4,
    "the Netherlands": 2,
    "Austria": 3,
    "Poland": 5,
    "Sweden": 5,
}
ITEMS = [
    "jacket",
    "laptop bag",
    "coffee maker",
    "pair of shoes",
    "desk lamp",
    "backpack",
    "headphones",
    "kettle",
]

# intent → (user phrasings, answer). {order}, {item}, {country} are filled in per row.
KNOWN: dict[str, tuple[list[str], str]] = {
    "order_status": (
        [
            "Where is my order {order}?",
            "Can you check the status of order #{order}?",
            "Has my order {order} shipped yet?",
            "I haven't received order {order} yet, where is it?",
            "Track order {order} please",
            "What's the status of my order {order}?",
            "My order {order} is late, when will it arrive?",
            "Any update on order number {order}?",
        ],
        "You can follow your order under Account > Orders. It shows the carrier, the tracking link "
        "and the expected delivery date.",
    ),
    "refund": (
        [
            "I want a refund for order {order}",
            "How do I get my money back for the {item}?",
            "Can I return my {item} and get a refund?",
            "I'd like a refund please",
            "How long does a refund take?",
            "The {item} is broken, I want my money back",
            "Refund for order {order}?",
            "When will I get my refund for the {item}?",
        ],
        "Refunds go back to your original payment method within 5 business days after we receive "
        "the returned item.",
    ),
    "password_reset": (
        [
            "How do I reset my password?",
            "I forgot my password",
            "I can't log in, I lost my password",
            "Reset password please",
            "How can I change my password?",
            "My password doesn't work anymore",
            "I need a new password for my account",
            "Locked out of my account, forgot the password",
        ],
        "Go to Settings > Security > Reset password. We will email you a link that is valid for 30 minutes.",
    ),
    "shipping": (
        [
            "How long does shipping to {country} take?",
            "Do you ship to {country}?",
            "What are the delivery times for {country}?",
            "How many days to deliver to {country}?",
            "Can I get my {item} delivered to {country}?",
            "Shipping time to {country}?",
            "I live in {country}, how fast is delivery?",
            "When would an order to {country} arrive?",
        ],
        "We ship to {country}. Standard delivery takes {days} business days.",
    ),
    "cancel_order": (
        [
            "Cancel order {order}",
            "I want to cancel my order {order}",
            "How do I cancel an order?",
            "Please cancel the {item} I just ordered",
            "Can I still cancel order #{order}?",
            "I changed my mind, cancel my order please",
            "Stop my order {order}",
            "Is it possible to cancel the order for the {item}?",
        ],
        "You can cancel an order within 1 hour of placing it under Account > Orders > Cancel. After "
        "that, please wait for delivery and return it.",
    ),
    "opening_hours": (
        [
            "What are your opening hours?",
            "When is support available?",
            "Are you open on Saturday?",
            "What time does customer service close?",
            "When can I call you?",
            "Is the support team available on weekends?",
            "What are your business hours?",
            "When are you open?",
        ],
        "Our support team is available Monday to Friday, 8:00 to 18:00 CET, and Saturday 9:00 to 13:00.",
    ),
    "change_address": (
        [
            "How do I change the delivery address for order {order}?",
            "I moved, can I update the shipping address?",
            "Wrong address on order {order}",
            "Can I send the {item} to a different address?",
            "Change my delivery address please",
            "I entered the wrong address for my {item}",
            "Update the address on order #{order}",
            "Can I change where my order {order} is delivered?",
        ],
        "You can change the delivery address under Account > Orders until the order ships.",
    ),
    "payment_methods": (
        [
            "Which payment methods do you accept?",
            "Can I pay with PayPal?",
            "Do you take credit cards?",
            "How can I pay for the {item}?",
            "Is bank transfer possible?",
            "What are the payment options?",
            "Can I pay by Amex?",
            "Which cards can I use to pay?",
        ],
        "We accept Visa, Mastercard, American Express, PayPal and bank transfer.",
    ),
}

NEW: dict[str, tuple[list[str], str]] = {
    "warranty": (
        [
            "Is my {item} still under warranty?",
            "How long is the warranty on the {item}?",
            "My {item} stopped working, is it covered by warranty?",
            "How do I make a warranty claim for order {order}?",
            "Warranty for the {item}?",
            "Does the {item} come with a warranty?",
        ],
        "All products have a 2-year warranty. Start a claim under Account > Warranty with your order number.",
    ),
    "gift_card": (
        [
            "How do I redeem a gift card?",
            "Where do I enter my gift card code?",
            "Can I pay for the {item} with a gift card?",
            "Do gift cards expire?",
            "I got a gift card, how do I use it?",
            "Gift card not working at checkout",
        ],
        "Enter the gift card code at checkout under Payment > Gift card. The balance never expires.",
    ),
    "loyalty_points": (
        [
            "How many reward points do I have?",
            "How do loyalty points work?",
            "Can I use my points for the {item}?",
            "Where can I see my points balance?",
            "Do I get points for order {order}?",
            "What are reward points worth?",
        ],
        "You earn 1 point per euro spent. See your balance under Account > Rewards; 100 points give a "
        "5 euro discount.",
    ),
}

GREETINGS = ["", "", "", "Hi, ", "Hello! ", "Hey, ", "Good morning, ", "Hi there. "]
ENDINGS = ["", "", "", " Thanks!", " Thank you.", " Please help.", " thx", " Cheers"]


def _fill(template: str, slots: dict[str, Any]) -> str:
    return template.format(**slots)


def _rows(
    intents: dict[str, tuple[list[str], str]], per_intent: int, rng: random.Random
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for intent, (phrasings, answer) in intents.items():
        made = 0
        while made < per_intent:
            country = rng.choice(sorted(SHIPPING_DAYS))
            slots = {
                "order": rng.randint(10000, 99999),
                "item": rng.choice(ITEMS),
                "country": country,
                "days": SHIPPING_DAYS[country],
            }
            question = rng.choice(GREETINGS) + _fill(rng.choice(phrasings), slots) + rng.choice(ENDINGS)
            if rng.random() < 0.15:
                question = question.lower()
            if question in seen:
                continue
            seen.add(question)
            made += 1
            messages = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": _fill(answer, slots)},
            ]
            row = {"messages": messages, "intent": intent}
            rows.append({**row, "split": assign_split({"prompt": question}, salt="starter")})
    rng.shuffle(rows)
    return rows


def generate(out_dir: Path = HERE, seed: int = SEED) -> dict[str, Path]:
    """Write support_known.jsonl and support_new.jsonl; the same seed writes the same bytes."""
    rng = random.Random(seed)
    files = {"known": (KNOWN, 200), "new": (NEW, 120)}
    written = {}
    for name, (intents, per_intent) in files.items():
        path = out_dir / f"support_{name}.jsonl"
        rows = _rows(intents, per_intent, rng)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        written[name] = path
    return written


if __name__ == "__main__":
    for name, path in generate().items():
        rows = len(path.read_text(encoding="utf-8").splitlines())
        print(f"{name}: {path} ({rows} rows)")
