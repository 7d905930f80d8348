"""Cron schedules: the five-field syntax (minute hour day month weekday) and the next time one fires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from corral.errors import InvalidInputError

NICKNAMES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))
HORIZON = timedelta(days=366 * 5)  # "30 2 31 2 *" never fires: say so instead of looping forever


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                start, end = (int(x) for x in body.split("-", 1))
            else:
                start = end = int(body)
                if step_text:
                    end = high
        except ValueError:
            raise InvalidInputError(f"cron {name} '{part}' is not a number, range, list or */step") from None
        if step < 1 or not low <= start <= end <= high:
            raise InvalidInputError(f"cron {name} '{part}' is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is Sunday too)
    any_day: bool
    any_weekday: bool

    def matches(self, moment: datetime) -> bool:
        if moment.minute not in self.minutes or moment.hour not in self.hours:
            return False
        return moment.month in self.months and self._day_matches(moment)

    def next_after(self, moment: datetime) -> datetime:
        """The first minute strictly after `moment` that the schedule fires in (same time zone)."""
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = candidate + HORIZON
        while candidate < limit:
            if candidate.month not in self.months:
                candidate = (candidate.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + timedelta(days=1)
                continue
            if candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + timedelta(hours=1)
                continue
            if self.matches(candidate):
                return candidate
            candidate += timedelta(minutes=1)
        raise InvalidInputError(f"cron '{self.text}' never fires")

    def _day_matches(self, moment: datetime) -> bool:
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # cron: both restricted means either may match
            return day_ok and weekday_ok
        return day_ok or weekday_ok


def parse_cron(text: str) -> Cron:
    """A cron expression checked completely: five fields, or @hourly, @daily, @weekly, @monthly, @yearly."""
    expression = NICKNAMES.get(text.strip().lower(), text.strip())
    parts = expression.split()
    if len(parts) != 5:
        raise InvalidInputError(
            f"cron '{text}' has {len(parts)} fields, not 5",
            hint="write minute hour day month weekday, e.g. '0 3 * * 1' (Mondays 03:00), or @daily",
        )
    minutes, hours, days, months, weekdays = (
        _field(part, name, low, high) for part, (name, low, high) in zip(parts, FIELDS, strict=True)
    )
    weekdays = frozenset(d % 7 for d in weekdays)
    return Cron(text, minutes, hours, days, months, weekdays, parts[2] == "*", parts[4] == "*")
