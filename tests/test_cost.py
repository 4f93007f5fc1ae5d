"""The one cost formula (rig/cost.py) that every printed worst case comes from."""

from rig.cost import HourlyRates, stopped_usd_per_day, worst_case_text, worst_case_usd


def test_worst_case_adds_disk_and_ip_to_compute_for_the_deadline_window() -> None:
    # g4dn.2xlarge on demand in eu-west-1 (catalog) + the default gp3 disk + one public IPv4.
    rates = HourlyRates(compute=0.838, disk=0.084, public_ip=0.005)
    assert worst_case_usd(rates, 4) == 3.71
    assert worst_case_text(rates, 4) == "worst case 4 h, $3.71"


def test_stopped_vm_still_pays_disk_and_ip_but_not_compute() -> None:
    rates = HourlyRates(compute=1.0, disk=0.084, public_ip=0.005)
    assert stopped_usd_per_day(rates) == 2.14
    assert rates.stopped < rates.running
