"""SpekPy's results kept on disk (ct2x.drr.tube): the same numbers as SpekPy computes, read back without SpekPy in a
later call, computed again over a damaged file, and returned when the cache folder cannot be written."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ct2x.drr import tube


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache root for the test (``$XDG_CACHE_HOME``), and no SpekPy model kept in this process."""
    tube._tube.cache_clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tube.cache_folder()


def _without_spekpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import spekpy`` fail and forget the SpekPy models built in this process, so that only a result read
    from the disk can be returned."""
    monkeypatch.setitem(sys.modules, "spekpy", None)
    tube._tube.cache_clear()


def test_a_spectrum_is_spekpys_and_is_read_back_without_spekpy(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import spekpy

    expected = spekpy.Spek(kvp=80, th=14.0, dk=1.0)
    expected.filter("Al", 2.5)
    energies, fluence = expected.get_spectrum()
    first = tube.spectrum(80, 14.0, 2.5, 1.0)
    np.testing.assert_array_equal(first[0], energies)
    np.testing.assert_array_equal(first[1], fluence)
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["spectrum"]
    assert cache.parent.name == "ct2x" and cache.name == f"spekpy-{spekpy.__version__}"

    _without_spekpy(monkeypatch)
    again = tube.spectrum(80, 14.0, 2.5, 1.0)
    np.testing.assert_array_equal(again[0], energies)
    np.testing.assert_array_equal(again[1], fluence)
    with pytest.raises(ImportError):  # another tube is not on the disk: SpekPy is asked, and is missing here
        tube.spectrum(80, 14.0, 3.0, 1.0)


def test_the_off_axis_fluence_is_read_back_and_shows_the_heel(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    along = np.linspace(-15.0, 15.0, 7)
    first = tube.off_axis_fluence(70, 12.0, 3.5, 1.0, along, 100.0)
    assert first[3] == pytest.approx(1.0)  # relative to the central ray
    assert first[0] < 0.9 * first[-1]  # dimmer toward the anode (negative positions): the heel effect
    _without_spekpy(monkeypatch)
    np.testing.assert_array_equal(tube.off_axis_fluence(70, 12.0, 3.5, 1.0, along, 100.0), first)
    with pytest.raises(ImportError):  # another distance is another result
        tube.off_axis_fluence(70, 12.0, 3.5, 1.0, along, 90.0)


def test_a_damaged_file_is_computed_again_and_replaced(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tube.spectrum(70, 12.0, 3.5, 1.0)
    (stored,) = cache.iterdir()
    stored.write_bytes(stored.read_bytes()[:100])  # a write cut short
    again = tube.spectrum(70, 12.0, 3.5, 1.0)
    np.testing.assert_array_equal(again[1], first[1])
    _without_spekpy(monkeypatch)  # the file was replaced by a whole one
    np.testing.assert_array_equal(tube.spectrum(70, 12.0, 3.5, 1.0)[1], first[1])


def test_an_unusable_cache_folder_costs_only_the_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    energies, fluence = tube.spectrum(70, 12.0, 3.5, 1.0)
    assert energies.shape == fluence.shape and fluence.max() > 0
    assert blocked.read_text() == "not a folder"


def test_no_home_folder_costs_only_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    energies, fluence = tube.spectrum(70, 12.0, 3.5, 1.0)
    assert energies.shape == fluence.shape and fluence.max() > 0


def test_a_file_of_another_call_is_not_used(cache: Path) -> None:
    """A file under the call's name that holds another call's answer (a name collision, an older layout) is
    computed over."""
    first = tube.spectrum(70, 12.0, 3.5, 1.0)
    (stored,) = cache.iterdir()
    zeros = np.zeros_like(first[1])
    np.savez(stored, key=np.array("('spectrum', 90, 12.0, 3.5, 1.0)"), energies=zeros, fluence=zeros)
    np.testing.assert_array_equal(tube.spectrum(70, 12.0, 3.5, 1.0)[1], first[1])
