"""Turn a plugin's :class:`~gpuforge.hardware.estimates.Estimate` into a plan per GPU:
fits or not, roofline time, cost, and the recommendation (the cheapest GPU that fits).

Usable memory. Not all of a GPU's memory is the job's: the CUDA context (300-600 MiB
with cuBLAS/cuDNN loaded), the caching allocator's fragmentation and the display (on
desktop cards) take their share. We reserve ``max(RESERVE_MIN_GIB, RESERVE_FRACTION x
memory)``: 5% of the card, at least 0.5 GiB (4 GiB on an 80 GiB card, 2.4 GiB on a
48 GiB one). An estimate fits when ``memory_bytes <= usable``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from gpuforge.hardware.estimates import Estimate
from gpuforge.hardware.profiles import GpuProfile
from gpuforge.hardware.roofline import format_seconds, roofline

RESERVE_FRACTION = 0.05
RESERVE_MIN_GIB = 0.5
GIB = 2**30


def reserve_bytes(profile: GpuProfile) -> int:
    return int(max(RESERVE_MIN_GIB * GIB, RESERVE_FRACTION * profile.memory_bytes))


def usable_memory_bytes(profile: GpuProfile) -> int:
    """Memory a job may plan on: the card's memory minus :func:`reserve_bytes`."""
    return profile.memory_bytes - reserve_bytes(profile)


def check_estimate(est: object, where: str) -> Estimate:
    """The plugin returned a well-formed Estimate (non-negative finite numbers)."""
    if not isinstance(est, Estimate):
        raise TypeError(f"{where} returned {type(est).__name__}, expected gpuforge.hardware.estimates.Estimate")
    for name in ("memory_bytes", "flops", "bytes_moved"):
        v = getattr(est, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{where} returned {name}={v!r}; it must be a non-negative finite number")
    return est


@dataclass
class GpuPlan:
    gpu: str
    name: str
    memory_gib: float
    usable_gib: float
    needs_gib: float
    fits: bool
    min_gpus: int
    """GPUs of this type the memory needs if it were sharded perfectly (FSDP/ZeRO-3 style)."""
    time_s: float | None
    bound: str
    usd_per_hour: float | None
    cost_usd: float | None
    """Price x time for the whole work on one GPU (None without time or price)."""
    provider: str = ""
    price_date: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    estimate: Estimate
    gpus: list[GpuPlan]
    recommendation: str
    recommended: str | None
    reserve: str = (f"usable memory = memory - max({RESERVE_MIN_GIB} GiB, {RESERVE_FRACTION:.0%} of memory) "
                    "for the CUDA context and allocator fragmentation")
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"estimate": self.estimate.to_dict(), "gpus": [g.to_dict() for g in self.gpus],
                "recommended": self.recommended, "recommendation": self.recommendation,
                "reserve": self.reserve, "notes": list(self.notes)}


def plan_estimate(est: Estimate, profiles: list[GpuProfile], pricing: dict | None = None,
                  efficiencies: dict[str, dict[str, float]] | None = None) -> Plan:
    """Per GPU: fits, time (roofline), cost; then the cheapest GPU that fits.

    ``efficiencies``: GPU id -> {"compute_efficiency", "bandwidth_efficiency"}, the shares of
    the datasheet peaks that ``gpuforge hw bench`` measured on that GPU (scale its time)."""
    pricing = pricing or {}
    efficiencies = efficiencies or {}
    rows: list[GpuPlan] = []
    has_work = est.flops > 0 or est.bytes_moved > 0
    for p in profiles:
        usable = usable_memory_bytes(p)
        fits = est.memory_bytes <= usable
        time_s, bound, note = None, "-", ""
        if has_work:
            eff = efficiencies.get(p.id, {})
            ce, be = eff.get("compute_efficiency", 1.0), eff.get("bandwidth_efficiency", 1.0)
            r = roofline(p, est.flops, est.bytes_moved, est.dtype, compute_efficiency=ce, bandwidth_efficiency=be)
            time_s, bound, note = r.time_s, r.bound, r.note
            if eff:
                note = (note + "; " if note else "") + f"time at hw bench shares (compute x{ce:.2f}, bandwidth x{be:.2f})"
        price = pricing.get(p.id)
        usd = price.usd_per_hour if price else None
        cost = usd * time_s / 3600 if (usd is not None and time_s is not None) else None
        rows.append(GpuPlan(
            gpu=p.id, name=p.name, memory_gib=p.memory_gib, usable_gib=round(usable / GIB, 2),
            needs_gib=round(est.memory_bytes / GIB, 2), fits=fits,
            min_gpus=max(1, math.ceil(est.memory_bytes / usable)) if usable > 0 else 0,
            time_s=time_s, bound=bound, usd_per_hour=usd, cost_usd=cost,
            provider=price.provider if price else "", price_date=price.date if price else "",
            note=note if fits else (note + "; " if note else "") + "does not fit",
        ))
    recommended, text = _recommend(est, rows)
    return Plan(estimate=est, gpus=rows, recommendation=text, recommended=recommended, notes=list(est.notes))


def _owned(r: GpuPlan) -> bool:
    """Priced as owned hardware (amortized purchase), not rentable by the hour."""
    return r.provider.lower().startswith("owned")


def _recommend(est: Estimate, rows: list[GpuPlan]) -> tuple[str | None, str]:
    need = est.memory_bytes / GIB
    fitting = [r for r in rows if r.fits]
    if fitting:
        priced = [r for r in fitting if r.usd_per_hour is not None]
        if not priced:
            best = min(fitting, key=lambda r: (r.time_s if r.time_s is not None else 0, r.gpu))
            return best.gpu, f"{best.gpu} fits ({need:.1f} of {best.usable_gib:.1f} GiB usable); no price known"
        # Recommend what can be rented; a cheaper owned card is mentioned after it.
        rentable = [r for r in priced if not _owned(r)] or priced
        by_cost = all(r.cost_usd is not None for r in priced)

        def key(r):
            return (r.cost_usd, r.time_s, r.gpu) if by_cost else (r.usd_per_hour, r.gpu)

        best = min(rentable, key=key)
        if by_cost:
            why = (f"cheapest that fits: about ${best.cost_usd:.4g} for the work "
                   f"({format_seconds(best.time_s)} at ${best.usd_per_hour:g}/h, {best.provider} {best.price_date})")
        else:
            why = f"cheapest per hour that fits: ${best.usd_per_hour:g}/h ({best.provider} {best.price_date})"
        extra = ""
        fastest = min(fitting, key=lambda r: (r.time_s if r.time_s is not None else math.inf, r.gpu))
        if fastest.gpu != best.gpu and fastest.time_s is not None:
            extra += f"; fastest that fits: {fastest.gpu} ({format_seconds(fastest.time_s)})"
        owned = min((r for r in priced if _owned(r)), key=key, default=None)
        if owned is not None and owned.gpu != best.gpu and key(owned) < key(best):
            extra += f"; cheaper if you own one: {owned.gpu} ({owned.provider})"
        return best.gpu, f"{best.gpu}: {why}; needs {need:.1f} of {best.usable_gib:.1f} GiB usable{extra}"
    if not rows:
        return None, "no GPU profiles selected"
    biggest = max(rows, key=lambda r: (r.usable_gib, -(r.usd_per_hour or 0)))
    return None, (f"no single GPU fits: needs {need:.1f} GiB, the largest usable is {biggest.usable_gib:.1f} GiB "
                  f"({biggest.gpu}); sharded (FSDP/ZeRO-3, tensor parallel) it needs at least "
                  f"{biggest.min_gpus} x {biggest.gpu}, or shrink it (see notes)")
