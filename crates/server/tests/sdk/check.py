"""Calls the gateway with the official Python SDKs: anthropic, openai and google-genai.

Sync and streaming calls, tool calls included. Driven by the Rust test `tests/sdk.rs`, which
starts the gateway and the mock upstream and passes:
  AETHER_URL   the gateway's base URL
  AETHER_KEY   a gateway API key
Prints one line per check and exits non-zero at the first failure.
"""

import os
import sys

import anthropic
import openai
from google import genai
from google.genai import types

URL = os.environ["AETHER_URL"]
KEY = os.environ["AETHER_KEY"]
CLAUDE = os.environ.get("AETHER_CLAUDE_MODEL", "claude-sonnet-4-5")
GPT = os.environ.get("AETHER_GPT_MODEL", "gpt-5")
GEMINI = os.environ.get("AETHER_GEMINI_MODEL", "gemini-2.5-flash")

TOOLS_ANTHROPIC = [{
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
TOOLS_OPENAI = [{
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}]


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name} {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {name}", flush=True)


def run_anthropic():
    c = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0)
    m = c.messages.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Say hi"}])
    check("anthropic sync", m.content and m.content[0].type == "text" and m.usage.input_tokens > 0, repr(m))
    with c.messages.stream(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Say hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check("anthropic stream", text and final.usage.output_tokens > 0, repr(final))
    t = c.messages.create(model=CLAUDE, max_tokens=64, tools=TOOLS_ANTHROPIC,
                          messages=[{"role": "user", "content": "weather in Paris? [tool]"}])
    check("anthropic tool call", any(b.type == "tool_use" for b in t.content), repr(t))
    with c.messages.stream(model=CLAUDE, max_tokens=64, tools=TOOLS_ANTHROPIC,
                           messages=[{"role": "user", "content": "weather in Paris? [tool]"}]) as s:
        final = s.get_final_message()
    check("anthropic tool call stream", any(b.type == "tool_use" for b in final.content), repr(final))
    n = c.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "Say hi"}])
    check("anthropic count_tokens", n.input_tokens > 0, repr(n))
    models = c.models.list()
    check("anthropic models", any(x.id == CLAUDE for x in models.data), repr(models))
    try:
        c.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        check("anthropic 404", False)
    except anthropic.NotFoundError:
        check("anthropic 404", True)


def run_openai():
    c = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0)
    r = c.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Say hi"}])
    check("openai chat sync", r.choices[0].message.content and r.usage.prompt_tokens > 0, repr(r))
    chunks = list(c.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Say hi"}], stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check("openai chat stream", text, repr(chunks[-1:]))
    check("openai chat stream has no usage chunk unless asked", all(ch.choices for ch in chunks), repr(chunks[-1:]))
    chunks = list(c.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "Say hi"}], stream=True,
                                            stream_options={"include_usage": True}))
    check("openai chat stream with usage", chunks[-1].usage and chunks[-1].usage.completion_tokens > 0, repr(chunks[-1]))
    t = c.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "weather? [tool]"}], tools=TOOLS_OPENAI)
    check("openai chat tool call", t.choices[0].message.tool_calls, repr(t))
    resp = c.responses.create(model=GPT, input="Say hi")
    check("openai responses sync", resp.output_text and resp.usage.input_tokens > 0, repr(resp))
    events = list(c.responses.create(model=GPT, input="Say hi", stream=True))
    check("openai responses stream", events and events[-1].type == "response.completed", repr(events[-1:]))
    models = c.models.list()
    check("openai models", any(m.id == GPT for m in models.data), repr(models))
    try:
        openai.OpenAI(base_url=URL + "/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": "x"}])
        check("openai 401", False)
    except openai.AuthenticationError:
        check("openai 401", True)


def run_gemini():
    c = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=URL))
    r = c.models.generate_content(model=GEMINI, contents="Say hi")
    check("gemini sync", r.text and r.usage_metadata.prompt_token_count > 0, repr(r))
    text = "".join(ch.text or "" for ch in c.models.generate_content_stream(model=GEMINI, contents="Say hi"))
    check("gemini stream", text)
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}))])
    r = c.models.generate_content(model=GEMINI, contents="weather? [tool]",
                                  config=types.GenerateContentConfig(tools=[tool],
                                      automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)))
    check("gemini tool call", r.function_calls, repr(r))


if __name__ == "__main__":
    only = sys.argv[1:] or ["anthropic", "openai", "gemini"]
    for name in only:
        {"anthropic": run_anthropic, "openai": run_openai, "gemini": run_gemini}[name]()
    print("all SDK checks passed")
