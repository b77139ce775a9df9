"""The browser fixture's rule: no browser skips a developer's run and fails CI's."""

from __future__ import annotations

import pytest

import browser


@pytest.mark.parametrize("value", ["true", "1", "yes", "True"])
def test_a_missing_browser_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        browser.missing("no Chromium")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_a_missing_browser_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        browser.missing("no Chromium")


def test_an_unusable_chromium_path_is_no_browser(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("SALTNADO_CHROMIUM", "/nonexistent/chromium")
    assert browser.chromium_path() is None


def test_launch_without_a_browser_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("SALTNADO_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(pytest.skip.Exception, match="SALTNADO_CHROMIUM=/nonexistent/chromium is not an executable"):
        with browser.launch_chromium():
            pass
