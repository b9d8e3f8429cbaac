"""``env.visit``: a page read by an extractor model behind a real OpenAI-compatible HTTP server
(a scripted one here; ``test_visit_llm.py`` drives the real SmolLM2), over the real in-process
search client and the HotpotQA mini corpus."""

from __future__ import annotations

import logging

import pytest
from env_support import hotpot_client
from policy_server import ServerThread, fake_extractor

from env.errors import ConfigError
from env.visit import VisitConfig, Visitor

URL = "https://en.wikipedia.org/wiki/University_of_Kansas"


@pytest.fixture(scope="module")
def extractor():
    log: list[dict] = []
    with ServerThread(fake_extractor(log)) as url:
        yield url, log


@pytest.fixture(scope="module")
def client(hotpot_root):
    c = hotpot_client(hotpot_root)
    yield c
    c.close()


def visitor(client, url: str, **options) -> Visitor:
    return Visitor(client, VisitConfig(url, "extractor", **options))


async def test_visit_returns_evidence_and_summary_and_logs_its_cost(client, extractor, caplog):
    url, log = extractor
    v = visitor(client, url, timeout=30)
    with caplog.at_level(logging.INFO, logger="env.visit"):
        result = await v.visit(URL, "good founding year")
    await v.aclose()
    assert result.ok and result.tries == 1, result
    assert result.title == "University of Kansas"
    assert result.summary == "about good founding year"
    assert result.evidence.startswith("The University of Kansas")
    assert "Evidence in page:" in result.text and "Summary:" in result.text
    assert log[-1]["page"].startswith("The University of Kansas")  # the real page was sent
    calls = [r.getMessage() for r in caplog.records if "extractor call" in r.getMessage()]
    assert len(calls) == 1 and "prompt_tokens=" in calls[0] and "completion_tokens=17" in calls[0]
    assert v.stats.calls == 1 and v.stats.completion_tokens == 17 and v.stats.prompt_tokens > 0


async def test_cache_hit_makes_no_request(client, extractor, tmp_path):
    url, log = extractor
    cache = tmp_path / "visits.jsonl"
    v = visitor(client, url, timeout=30, cache_path=str(cache))
    first = await v.visit(URL, "good cached goal")
    n = len(log)
    again = await v.visit(URL, "good   cached goal")  # the same goal, other spacing
    await v.aclose()
    assert first.ok and again.ok and again.cached and again.text == first.text
    assert len(log) == n and v.stats.cache_hits == 1
    # a new process reads the cache file: still no request
    v2 = visitor(client, url, timeout=30, cache_path=str(cache))
    third = await v2.visit(URL, "good cached goal")
    assert third.cached and third.text == first.text and len(log) == n
    # another model is another key
    v3 = Visitor(client, VisitConfig(url, "other-model", timeout=30, cache_path=str(cache)))
    fourth = await v3.visit(URL, "good cached goal")
    await v3.aclose()
    assert not fourth.cached and len(log) == n + 1 and log[-1]["model"] == "other-model"


async def test_out_of_format_retries_shorter_then_is_a_tool_error(client, extractor):
    url, log = extractor
    v = visitor(client, url, timeout=30, retries=2, max_input_tokens=100)
    n = len(log)
    result = await v.visit(URL, "garbled goal")
    await v.aclose()
    assert not result.ok and result.text == "" and result.tries == 3
    assert "no usable answer in 3 tries" in result.error and "out of format" in result.error
    pages = [r["page"] for r in log[n:]]
    assert len(pages) == 3 and len(pages[0]) > len(pages[1]) > len(pages[2])
    assert v.stats.failures == 1


async def test_too_long_input_retries_with_a_shorter_page(client, extractor):
    url, log = extractor
    v = visitor(client, url, timeout=30, retries=3, max_input_tokens=16)  # 64 characters
    n = len(log)
    result = await v.visit(URL, "fussy goal")
    await v.aclose()
    assert result.ok and result.tries == 2, result
    pages = [r["page"] for r in log[n:]]
    assert len(pages[0]) <= 64 and len(pages[0]) > 40 >= len(pages[1])
    assert pages[0].endswith("…") and pages[1].endswith("…")


async def test_timeout_is_a_tool_error(client, extractor):
    url, _ = extractor
    v = visitor(client, url, timeout=0.5)
    result = await v.visit(URL, "slow goal")
    await v.aclose()
    assert not result.ok and "extractor model failed" in result.error
    assert "0.5 s" in result.error


async def test_unreachable_model_is_a_tool_error(client):
    from policy_server import free_port

    v = visitor(client, f"http://127.0.0.1:{free_port()}", timeout=2)
    result = await v.visit(URL, "good goal")
    await v.aclose()
    assert not result.ok and "extractor model failed" in result.error


@pytest.mark.parametrize(
    ("url", "goal", "says"),
    [
        ("https://en.wikipedia.org/wiki/No_Such_Page_xyz", "good goal", "no page found"),
        ("", "good goal", "needs a url"),
        (None, "good goal", "needs a url"),
        (URL, "", "needs a goal"),
        (URL, "   \n ", "needs a goal"),
        (URL, None, "needs a goal"),
        (URL, 42, "needs a goal"),
        (URL, "x" * 5000, "at most 2000"),
    ],
    ids=["unknown-url", "empty-url", "no-url", "empty-goal", "blank-goal", "no-goal",
         "number-goal", "long-goal"],
)  # fmt: skip
async def test_bad_input_is_a_tool_error_without_a_model_request(
    client, extractor, url, goal, says
):
    ext, log = extractor
    v = visitor(client, ext, timeout=30)
    n = len(log)
    result = await v.visit(url, goal)
    await v.aclose()
    assert not result.ok and says in result.error and len(log) == n


def test_config_is_checked():
    with pytest.raises(ConfigError, match="shrink"):
        VisitConfig("http://x", "m", shrink=1.5)
    with pytest.raises(ConfigError, match="max_input_tokens"):
        VisitConfig("http://x", "m", max_input_tokens=0)
    with pytest.raises(ConfigError, match="goal"):
        VisitConfig("http://x", "m", prompt="{url} {page}")


async def test_a_single_try_is_named_as_one(client, extractor):
    url, _ = extractor
    v = visitor(client, url, timeout=30, retries=0)
    result = await v.visit(URL, "garbled single goal")
    await v.aclose()
    assert (
        result.tries == 1
        and "no usable answer in 1 try (last: a reply out of format" in result.error
    )
