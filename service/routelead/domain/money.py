"""Money as Decimal: parsing buyer-supplied prices and formatting for the wire."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
# Digits of a buyer's price past this place are cut (never rounded): the cents half-up rounding
# makes of it are the same, and later arithmetic stays within Decimal's 28 digits.
_KEPT = Decimal("1E-20")
ZERO = Decimal("0.00")
# A sanity ceiling: no single lead sells for more, whatever a buyer answers.
DEFAULT_MAX_PRICE = Decimal("10000")


class PriceError(ValueError):
    """A price that cannot be used as money (wrong type, NaN, negative, absurd)."""


def parse_price(raw: object, *, max_price: Decimal = DEFAULT_MAX_PRICE) -> Decimal:
    """Turn a buyer's price (JSON number or numeric string) into a Decimal, or raise PriceError."""
    if isinstance(raw, bool):  # bool is an int subclass; `true` is not a price
        raise PriceError(f"price is a boolean ({raw!r})")
    if isinstance(raw, Decimal):  # a JSON number read as decimal text (readers.JsonReader.exact)
        value = raw
    elif isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, float):
        # orjson hands us floats; repr() is the shortest text that round-trips, i.e. the digits
        # the buyer sent for any price up to 15 significant digits (longer numbers are re-read
        # as decimal text before they get here: readers.JsonReader.exact).
        value = Decimal(repr(raw))
    elif isinstance(raw, str):
        text = raw.strip().removeprefix("$").replace(",", "")
        if not text or len(text) > 64:
            raise PriceError(f"price is not a number ({_excerpt(raw)})")
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise PriceError(f"price is not a number ({_excerpt(raw)})") from None
    else:
        kind = {dict: "object", list: "array", type(None): "null"}.get(type(raw), type(raw).__name__)
        raise PriceError(f"price has type {kind}")
    if not value.is_finite():
        raise PriceError(f"price is not finite ({value})")
    if value < 0:
        raise PriceError(f"price is negative ({value})")
    if value > max_price:
        raise PriceError(f"price {value} exceeds the ceiling {max_price}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -20:
        return value.quantize(_KEPT, rounding=ROUND_DOWN)
    return value


def parse_config_money(raw: str | int) -> Decimal:
    """Parse a money amount written in config; floats are refused by the config model."""
    value = Decimal(str(raw))
    if not value.is_finite() or value < 0:
        raise ValueError(f"must be a non-negative amount, got {raw!r}")
    return value


def to_cents(value: Decimal) -> Decimal:
    """Round once, at the edge, to whole cents (half-up, as invoices do)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def fmt(value: Decimal) -> str:
    """Wire format for money: a decimal string rounded to cents ("45.00")."""
    return str(to_cents(value))


def _excerpt(raw: str) -> str:
    return repr(raw[:20] + ("…" if len(raw) > 20 else ""))
