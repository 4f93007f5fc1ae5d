"""Today's prices for `rig plan`: live where it can read them, the catalog's otherwise.

Live when that cloud's credentials exist (as for a deploy), else the catalog's with its date.
AWS: the spot price now (describe_spot_price_history, the cheapest AZ: where the deploy goes),
when boto3 is installed and credentials resolve. Azure, when signed in (`az login` or a service
principal): the public retail prices API for compute, the OS disk and the public IP. Anything
that cannot be read leaves that stand-in on catalog prices, and the plan says why; nothing here
ever fails the plan.
The arithmetic stays in rig.cost (through rig.aws.pricing / rig.azure.pricing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rig.catalog import Catalog
from rig.profile import Profile
from rig.standin import Standin, aws_standin, azure_standin, standins
from rig.state import iso


@dataclass
class Priced:
    standins: list[Standin]
    notes: list[str] = field(default_factory=list)  # where prices came from, and why not live
    live: bool = False  # at least one price was read live


def _aws_factory() -> tuple[Callable[[str], Any] | None, str | None]:
    """Real clients when boto3 and credentials are there; else (None, why not)."""
    try:
        from rig.aws.session import Aws, new_session
    except ImportError:
        return None, "AWS: boto3 is not installed (make setup-aws): catalog prices"
    try:
        creds = new_session("us-east-1").get_credentials()
    except Exception as exc:  # a broken config file must not break a plan
        return None, f"AWS: credentials unreadable ({exc.__class__.__name__}): catalog prices"
    if creds is None:
        return None, "AWS: no credentials (aws configure / aws sso login): catalog prices"
    return Aws, None


def priced_standins(
    profile: Profile,
    cat: Catalog,
    offline: bool = False,
    aws_for: Callable[[str], Any] | None = None,
    http: Any | None = None,
    now: dt.datetime | None = None,
) -> Priced:
    """The profile's stand-ins with today's compute price where it can be read.

    `aws_for` (a region -> rig.aws.session.Aws factory) and `http` (rig.azure.http.Http) are
    the tests' seams; without them the real ones are used, or none when offline."""
    if offline:
        return Priced(standins(profile, cat), ["prices: catalog only (--offline)"])
    now = now or dt.datetime.now(dt.UTC)
    out = Priced([])
    if profile.aws.enabled:
        factory, why = (aws_for, None) if aws_for is not None else _aws_factory()
        for place in profile.aws.placements():
            offline_one = aws_standin(profile, cat, place.instance_type, place.region)
            if factory is None or not profile.aws.spot:
                out.standins.append(offline_one)
                continue
            try:
                from rig.aws import pricing

                prices = pricing.spot_prices_now(factory(place.region), place.instance_type, now)
            except Exception as exc:  # botocore's errors: the plan goes on, offline
                out.notes.append(
                    f"AWS {place.instance_type}: spot price not read ({exc.__class__.__name__}: "
                    f"{str(exc)[:120]}): catalog prices"
                )
                out.standins.append(offline_one)
                continue
            if not prices:
                out.notes.append(f"AWS {place.instance_type}: no spot price in {place.region}")
                out.standins.append(offline_one)
                continue
            az, price = min(prices.items(), key=lambda kv: (kv[1], kv[0]))
            out.live = True
            source = (
                f"live: describe_spot_price_history {iso(now)}, {az} (the cheapest AZ, where "
                "the deploy goes)"
            )
            out.standins.append(
                aws_standin(profile, cat, place.instance_type, place.region, price, source)
            )
        if why:
            out.notes.append(why)
    if profile.azure.enabled:
        out.standins += _azure(profile, cat, http, now, out)
    return out


def _azure(
    profile: Profile, cat: Catalog, http: Any | None, now: dt.datetime, out: Priced
) -> list[Standin]:
    from rig.azure import pricing
    from rig.azure.credentials import find_credentials
    from rig.azure.http import urllib_http

    az = profile.azure
    if http is None:
        if find_credentials(subscription=az.subscription) is None:
            out.notes.append("Azure: not signed in (az login): catalog prices")
            return [azure_standin(profile, cat, size) for size in az.vm_sizes]
        http = urllib_http
    found = []
    for size in az.vm_sizes:
        quote = pricing.retail_price(az.location, size, http, now)
        extras = pricing.live_extras(az.location, az.disk_type, az.disk_gb, cat, http)
        if quote is None and extras == pricing.Extras():
            out.notes.append(f"Azure {size}: prices.azure.com did not answer: catalog prices")
            found.append(azure_standin(profile, cat, size))
            continue
        try:
            cost = pricing.vm_cost(profile, size, quote, extras, now, cat)
        except pricing.PriceUnknown as exc:
            out.notes.append(f"Azure {size}: {exc}")
            found.append(azure_standin(profile, cat, size))
            continue
        out.live = True
        found.append(azure_standin(profile, cat, size, cost))
    return found
