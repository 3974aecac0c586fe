"""The official Python SDKs parse answers the gateway converted from another dialect.

Driven by `tests/conversion.rs` (`official_sdks_parse_converted_answers`), which serves model `via-claude` only from an Anthropic
upstream, `via-chat` from OpenAI Chat, `via-responses` from OpenAI Responses and `via-gemini`
from Gemini (the mock; every answer is "Lyon is cloudy." plus a get_weather call), and passes:
  AETHER_URL   the gateway's base URL
  AETHER_KEY   a gateway API key
Each SDK calls every upstream of another dialect, sync and streaming, with a tool call and its
result in the conversation, and must see the text and the tool call. Prints one line per check
and exits non-zero at the first failure.
"""

import json
import os
import sys

import anthropic
import openai
from google import genai
from google.genai import types

URL = os.environ["AETHER_URL"]
KEY = os.environ["AETHER_KEY"]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TEXT = "Lyon is cloudy."


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name} {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {name}", flush=True)


def run_anthropic():
    c = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0)
    tools = [{"name": "get_weather", "description": "Weather by city", "input_schema": SCHEMA}]
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"},
            {"type": "text", "text": "And Lyon?"}]},
    ]
    for model in ["via-chat", "via-responses", "via-gemini"]:
        m = c.messages.create(model=model, max_tokens=128, system="Be terse.", tools=tools, messages=messages)
        calls = [b for b in m.content if b.type == "tool_use"]
        text = "".join(b.text for b in m.content if b.type == "text")
        check(f"anthropic sync from {model}", text == TEXT and calls and calls[0].input == {"city": "Lyon"}
              and m.stop_reason == "tool_use" and m.usage.output_tokens > 0, repr(m))
        with c.messages.stream(model=model, max_tokens=128, system="Be terse.", tools=tools,
                               messages=messages) as s:
            streamed = "".join(s.text_stream)
            final = s.get_final_message()
        calls = [b for b in final.content if b.type == "tool_use"]
        check(f"anthropic stream from {model}", streamed == TEXT and calls and calls[0].input == {"city": "Lyon"}
              and final.stop_reason == "tool_use" and final.usage.output_tokens > 0, repr(final))


def run_openai_chat():
    c = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_A", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_A", "content": "18C"},
        {"role": "user", "content": "And Lyon?"},
    ]
    for model in ["via-claude", "via-responses", "via-gemini"]:
        r = c.chat.completions.create(model=model, messages=messages, tools=tools)
        msg = r.choices[0].message
        check(f"openai chat sync from {model}", msg.content == TEXT and msg.tool_calls
              and json.loads(msg.tool_calls[0].function.arguments) == {"city": "Lyon"}
              and r.choices[0].finish_reason == "tool_calls" and r.usage.completion_tokens > 0, repr(r))
        with c.chat.completions.stream(model=model, messages=messages, tools=tools,
                                       stream_options={"include_usage": True}) as s:
            for _ in s:
                pass
            final = s.get_final_completion()
        msg = final.choices[0].message
        check(f"openai chat stream from {model}", msg.content == TEXT and msg.tool_calls
              and json.loads(msg.tool_calls[0].function.arguments) == {"city": "Lyon"}
              and final.choices[0].finish_reason == "tool_calls", repr(final))


def run_openai_responses():
    c = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0)
    tools = [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]
    items = [
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_A", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_A", "output": "18C"},
        {"type": "message", "role": "user", "content": "And Lyon?"},
    ]
    for model in ["via-claude", "via-chat", "via-gemini"]:
        r = c.responses.create(model=model, instructions="Be terse.", input=items, tools=tools)
        calls = [o for o in r.output if o.type == "function_call"]
        check(f"openai responses sync from {model}", r.output_text == TEXT and calls
              and json.loads(calls[0].arguments) == {"city": "Lyon"} and r.usage.output_tokens > 0, repr(r))
        with c.responses.stream(model=model, instructions="Be terse.", input=items, tools=tools) as s:
            for _ in s:
                pass
            final = s.get_final_response()
        calls = [o for o in final.output if o.type == "function_call"]
        check(f"openai responses stream from {model}", final.output_text == TEXT and calls
              and json.loads(calls[0].arguments) == {"city": "Lyon"} and final.status == "completed", repr(final))


def run_gemini():
    c = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=URL))
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}))])
    config = types.GenerateContentConfig(
        system_instruction="Be terse.", tools=[tool],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    contents = [
        types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))]),
        types.Content(role="user", parts=[
            types.Part(function_response=types.FunctionResponse(name="get_weather", response={"result": "18C"})),
            types.Part(text="And Lyon?")]),
    ]
    for model in ["via-claude", "via-chat", "via-responses"]:
        r = c.models.generate_content(model=model, contents=contents, config=config)
        check(f"gemini sync from {model}", r.text == TEXT and r.function_calls
              and r.function_calls[0].args == {"city": "Lyon"} and r.usage_metadata.prompt_token_count > 0, repr(r))
        text, calls = "", []
        for ch in c.models.generate_content_stream(model=model, contents=contents, config=config):
            text += ch.text or ""
            calls += ch.function_calls or []
        check(f"gemini stream from {model}", text == TEXT and calls and calls[0].args == {"city": "Lyon"},
              repr((text, calls)))


if __name__ == "__main__":
    only = sys.argv[1:] or ["anthropic", "chat", "responses", "gemini"]
    for name in only:
        {"anthropic": run_anthropic, "chat": run_openai_chat, "responses": run_openai_responses,
         "gemini": run_gemini}[name]()
    print("all conversion SDK checks passed")
