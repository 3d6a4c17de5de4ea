"""The living demo's script: the sprint it plays and the code its agents write.

Plain data, no Django: the simulated agents read it (a builder "knows" how to write
the task it pulled, by its title; a reviewer knows what it would flag), and the
director uses it to draft the plan and to play the lead (a real finding is accepted,
a false alarm overruled).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The repository a run starts from (the demo shop, with the tests the check runs).
START_FILES = {
    # Its own pytest root: the merge check runs in a scratch checkout that may sit
    # inside another project (Fleet's own data directory), whose settings must not apply.
    "pytest.ini": "[pytest]\n",
    "README.md": "# Live shop\n\nThe demo shop that Fleet's simulated agents work on.\n",
    "shop/__init__.py": "",
    "shop/config.py": 'CURRENCY = "EUR"\nTAX_RATE = 0.2\nFREE_SHIPPING_CENTS = 5000\n',
    "shop/routes.py": 'ROUTES = {\n    "/": "index",\n}\n',
    "tests/__init__.py": "",
    "tests/test_config.py": (
        "from shop.config import TAX_RATE\n\n\ndef test_tax_rate():\n    assert 0 < TAX_RATE < 1\n"
    ),
}


@dataclass(frozen=True)
class Finding:
    """What a reviewer flags when ``when`` is in the diff; ``real`` decides the verdict."""

    path: str
    line: int
    severity: str
    title: str
    body: str
    when: str
    real: bool
    reason: str = ""  # why a person overrules a false alarm


@dataclass(frozen=True)
class Work:
    title: str
    kind: str
    paths: tuple[str, ...]
    files: dict[str, str]
    # Applied when the task comes back (an accepted finding, a failed merge check).
    fix: dict[str, str] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    steps: int = 6  # units of work before the commit


ROUTES_HEAD = 'ROUTES = {\n    "/": "index",\n'

TAX = Work(
    "Tax helper",
    "feat",
    ("shop/tax.py", "tests/test_tax.py"),
    {
        "shop/tax.py": (
            "from decimal import ROUND_HALF_EVEN, Decimal\n\nfrom shop.config import TAX_RATE\n\n\n"
            "def gross_cents(net_cents: int, rate: float = TAX_RATE) -> int:\n"
            '    """The price with tax, rounded half-even to a whole cent."""\n'
            "    gross = Decimal(net_cents) * (1 + Decimal(str(rate)))\n"
            '    return int(gross.quantize(Decimal("1"), rounding=ROUND_HALF_EVEN))\n'
        ),
        "tests/test_tax.py": (
            "from shop.tax import gross_cents\n\n\ndef test_gross():\n"
            "    assert gross_cents(100) == 120\n    assert gross_cents(5, 0.1) == 6\n"
        ),
    },
    findings=(
        Finding(
            "shop/tax.py",
            3,
            "minor",
            "Tax rate is read once at import",
            "A changed TAX_RATE would not reach gross_cents until a restart.",
            when="TAX_RATE",
            real=False,
            reason="Config is fixed per deploy; import-time reading is intended.",
        ),
    ),
    steps=5,
)

CART = Work(
    "Cart totals",
    "feat",
    ("shop/cart.py", "tests/test_cart.py"),
    {
        "shop/cart.py": (
            "class Cart:\n    def __init__(self) -> None:\n        self.lines = {}\n\n"
            "    def add(self, sku: str, price_cents: int, quantity: int = 1) -> None:\n"
            "        count, _ = self.lines.get(sku, (0, price_cents))\n"
            "        self.lines[sku] = (count + quantity, price_cents)\n\n"
            "    def total_cents(self) -> int:\n"
            "        return sum(price for _, price in self.lines.values())\n"
        ),
        "tests/test_cart.py": (
            "from shop.cart import Cart\n\n\ndef test_total_counts_quantities():\n"
            '    cart = Cart()\n    cart.add("tea", 250, 2)\n    cart.add("mug", 100)\n'
            "    assert cart.total_cents() == 600\n"
        ),
    },
    # The builder forgot the quantities; its tests catch it, but only the merge
    # queue's check runs them: the task comes back with the log.
    fix={
        "shop/cart.py": (
            "class Cart:\n    def __init__(self) -> None:\n        self.lines = {}\n\n"
            "    def add(self, sku: str, price_cents: int, quantity: int = 1) -> None:\n"
            "        count, _ = self.lines.get(sku, (0, price_cents))\n"
            "        self.lines[sku] = (count + quantity, price_cents)\n\n"
            "    def total_cents(self) -> int:\n"
            "        return sum(count * price for count, price in self.lines.values())\n"
        ),
    },
    findings=(
        Finding(
            "shop/cart.py",
            3,
            "info",
            "Cart lines could be a dataclass",
            "A tuple of (count, price) is easy to misread.",
            when="self.lines = {}",
            real=False,
            reason="Style preference; the tuple is private to Cart.",
        ),
    ),
    steps=6,
)

ORDERS = Work(
    "Order history page",
    "feat",
    ("shop/orders.py", "shop/routes.py", "tests/test_orders.py"),
    {
        "shop/orders.py": (
            "def order_history(orders: list[dict]) -> list[dict]:\n"
            '    """Newest first."""\n'
            '    return sorted(orders, key=lambda order: order["placed_at"], reverse=True)\n'
        ),
        "shop/routes.py": ROUTES_HEAD + '    "/orders/": "order_history",\n}\n',
        "tests/test_orders.py": (
            "from shop.orders import order_history\nfrom shop.routes import ROUTES\n\n\n"
            "def test_newest_first():\n"
            '    orders = [{"placed_at": 1}, {"placed_at": 3}, {"placed_at": 2}]\n'
            '    assert [o["placed_at"] for o in order_history(orders)] == [3, 2, 1]\n'
            '    assert ROUTES["/orders/"] == "order_history"\n'
        ),
    },
    steps=7,
)

SHIPPING = Work(
    "Shipping rates",
    "feat",
    ("shop/shipping.py", "tests/test_shipping.py"),
    {
        "shop/shipping.py": (
            "from shop.config import FREE_SHIPPING_CENTS\n\n\n"
            "def shipping_cents(subtotal_cents: int) -> int:\n"
            "    if subtotal_cents > FREE_SHIPPING_CENTS:\n        return 0\n    return 495\n"
        ),
        "tests/test_shipping.py": (
            "from shop.shipping import shipping_cents\n\n\ndef test_rates():\n"
            "    assert shipping_cents(1000) == 495\n    assert shipping_cents(9000) == 0\n"
        ),
    },
    fix={
        "shop/shipping.py": (
            "from shop.config import FREE_SHIPPING_CENTS\n\n\n"
            "def shipping_cents(subtotal_cents: int) -> int:\n"
            "    if subtotal_cents >= FREE_SHIPPING_CENTS:\n        return 0\n    return 495\n"
        ),
        "tests/test_shipping.py": (
            "from shop.shipping import shipping_cents\n\n\ndef test_rates():\n"
            "    assert shipping_cents(1000) == 495\n    assert shipping_cents(9000) == 0\n\n\n"
            "def test_free_from_the_threshold():\n    assert shipping_cents(5000) == 0\n"
        ),
    },
    findings=(
        Finding(
            "shop/shipping.py",
            5,
            "major",
            "Free shipping starts above the threshold, not at it",
            "The spec says free from €50; an order of exactly €50 pays €4.95.",
            when="subtotal_cents > FREE_SHIPPING_CENTS",
            real=True,
        ),
    ),
    steps=5,
)

DISCOUNTS = Work(
    "Discount codes",
    "feat",
    ("shop/discounts.py", "shop/routes.py", "tests/test_discounts.py"),
    {
        "shop/discounts.py": (
            'CODES = {"WELCOME10": 10}\n\n\n'
            "def apply(code: str, subtotal_cents: int) -> int:\n"
            "    percent = CODES.get(code.upper(), 0)\n"
            "    return subtotal_cents - subtotal_cents * percent // 100\n"
        ),
        "shop/routes.py": (
            ROUTES_HEAD + '    "/orders/": "order_history",\n    "/discounts/": "discounts",\n}\n'
        ),
        "tests/test_discounts.py": (
            "from shop.discounts import apply\n\n\ndef test_welcome():\n"
            '    assert apply("welcome10", 2000) == 1800\n    assert apply("nope", 2000) == 2000\n'
        ),
    },
    steps=8,
)

DOCS = Work(
    "Document the shop API",
    "docs",
    ("docs/api.md",),
    {
        "docs/api.md": (
            "# Shop API\n\n- `gross_cents(net_cents, rate)`: price with tax, half-even.\n"
            "- `Cart.add(sku, price_cents, quantity)`, `Cart.total_cents()`.\n"
            "- `shipping_cents(subtotal_cents)`: free from the threshold.\n"
        ),
    },
    steps=8,
)

# Wave 1 as drafted: ORDERS and DISCOUNTS both declare shop/routes.py; the lead keeps
# it with ORDERS and sequences DISCOUNTS into wave 2.
WAVES: tuple[tuple[Work, ...], ...] = ((TAX, CART, ORDERS, SHIPPING, DISCOUNTS), (DOCS,))
BY_TITLE = {work.title: work for wave in WAVES for work in wave}
SEQUENCED = (ORDERS.title, DISCOUNTS.title)  # (keeps the shared file, moves on)


def changelog_path(key: str) -> str:
    """Each task's changelog fragment (no shared CHANGELOG file to fight over)."""
    return f"changelog.d/{key}.md"


def finding_by_title(title: str) -> Finding | None:
    for work in BY_TITLE.values():
        for finding in work.findings:
            if finding.title == title:
                return finding
    return None
