"""A scripted model: the one stand-in of the agent-CLI tests.

It speaks the providers' HTTP APIs the real CLIs use -- Anthropic Messages
(with SSE streaming and tool_use blocks, for claude-code), the OpenAI
Responses API (streamed, with function calls, for codex) and OpenAI chat
completions (for aider) -- and follows a script instead of thinking:

    {"steps": [{"shell": "git commit ..."}, {"text": "done: {output}"}],
     "commit_message": "notes: one more line"}

The step a request gets is the number of assistant turns already in its
conversation: step 0 answers the human's message, step 1 the result of
step 0's tool, and so on. A `shell` step asks for the CLI's shell tool
(Bash, exec_command); a `text` step answers, `{output}` replaced by the last
tool result. Requests outside the main conversation (a CLI asking for a
title or a commit message) get a short answer. Every request is logged, one
JSON line each, with its headers, so a test can see what reached the model.

Usage: python3 server.py SCRIPT.json PORT_FILE LOG

With SCRIPTED_TLS_CERT and SCRIPTED_TLS_KEY in its environment it speaks
HTTPS (as the providers do); with SCRIPTED_REQUIRE_KEY it answers 401, as a
provider would, to any request that does not carry that key (x-api-key or
Authorization: Bearer) -- the credential-gateway tests' upstream.
"""

import json
import os
import sys
import threading
import time
import http.server

script = json.load(open(sys.argv[1]))
port_file, log_path = sys.argv[2], sys.argv[3]
log_lock = threading.Lock()
counter = [0]


def log(entry):
    with log_lock:
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def next_id(prefix):
    with log_lock:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"


def step(n, output):
    steps = script["steps"]
    s = steps[min(n, len(steps) - 1)]
    if "text" in s:
        return {"text": s["text"].replace("{output}", output.strip()[:2000])}
    return s


def text_of(content):
    if isinstance(content, str):
        return content
    out = []
    for c in content or []:
        if isinstance(c, dict):
            if c.get("type") in ("text", "output_text", "input_text"):
                out.append(c.get("text", ""))
            elif c.get("type") == "tool_result":
                out.append(text_of(c.get("content")))
    return "\n".join(out)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply_json(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def sse(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        self.close_connection = True

        def ev(kind, data):
            self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

        return ev

    def key_refused(self):
        want = os.environ.get("SCRIPTED_REQUIRE_KEY")
        if not want:
            return False
        got = self.headers.get("x-api-key") or ""
        auth = self.headers.get("authorization") or ""
        if got == want or auth == "Bearer " + want:
            return False
        self.reply_json({"type": "error", "error": {"type": "authentication_error",
                                                     "message": "invalid x-api-key"}}, status=401)
        return True

    def do_GET(self):
        log({"method": "GET", "path": self.path, "headers": dict(self.headers), "t": time.time()})
        if self.key_refused():
            return
        self.reply_json({"object": "list", "data": []})

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        req = json.loads(self.rfile.read(n) or b"{}")
        log({"method": "POST", "path": self.path, "headers": dict(self.headers), "t": time.time(), "body": req})
        if self.key_refused():
            return
        path = self.path.split("?")[0]
        if path.endswith("/messages/count_tokens"):
            return self.reply_json({"input_tokens": 10})
        if path.endswith("/messages"):
            return self.anthropic(req)
        if path.endswith("/responses"):
            return self.openai_responses(req)
        if path.endswith("/chat/completions"):
            return self.openai_chat(req)
        self.reply_json({"error": {"message": f"no such endpoint {path}"}}, 404)

    # Anthropic Messages (claude-code).
    def anthropic(self, req):
        tools = [t.get("name") for t in req.get("tools", [])]
        msgs = req.get("messages", [])
        turns = sum(1 for m in msgs if m.get("role") == "assistant")
        output = text_of(msgs[-1].get("content")) if msgs else ""
        s = step(turns, output) if "Bash" in tools else {"text": "ok"}
        mid = next_id("msg")
        if "shell" in s:
            block = {"type": "tool_use", "id": next_id("toolu"), "name": "Bash",
                     "input": {"command": s["shell"], "description": "run the command"}}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": s["text"]}
            stop = "end_turn"
        usage = {"input_tokens": 10, "output_tokens": 5}
        if not req.get("stream"):
            return self.reply_json({"id": mid, "type": "message", "role": "assistant", "model": req.get("model"),
                                    "content": [block], "stop_reason": stop, "stop_sequence": None, "usage": usage})
        ev = self.sse()
        ev("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": req.get("model"), "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}})
        if block["type"] == "text":
            ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": block["text"]}})
        else:
            start = dict(block, input={})
            ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start})
            ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                             "usage": {"output_tokens": 5}})
        ev("message_stop", {"type": "message_stop"})

    # OpenAI Responses, streamed (codex).
    def openai_responses(self, req):
        tools = [t.get("name") for t in req.get("tools", [])]
        items = req.get("input", [])
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        turns = sum(1 for i in items if i.get("type") == "function_call"
                    or (i.get("type") == "message" and i.get("role") == "assistant"))
        outputs = [i.get("output") for i in items if i.get("type") == "function_call_output"]
        last = outputs[-1] if outputs else ""
        if isinstance(last, (list, dict)):
            last = json.dumps(last)
        s = step(turns, last or "") if "exec_command" in tools else {"text": "ok"}
        rid = next_id("resp")
        if "shell" in s:
            item = {"type": "function_call", "id": next_id("fc"), "call_id": next_id("call"),
                    "name": "exec_command", "arguments": json.dumps({"cmd": s["shell"]}), "status": "completed"}
        else:
            item = {"type": "message", "id": next_id("msg"), "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": s["text"], "annotations": []}]}
        ev = self.sse()
        ev("response.created", {"type": "response.created", "response": {"id": rid, "object": "response", "status": "in_progress", "output": []}})
        if item["type"] == "message":
            ev("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                               "item": dict(item, status="in_progress", content=[])})
            ev("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item["id"],
                                               "output_index": 0, "content_index": 0, "delta": s["text"]})
        else:
            ev("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                               "item": dict(item, arguments="", status="in_progress")})
            ev("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                                                          "item_id": item["id"], "output_index": 0, "delta": item["arguments"]})
            ev("response.function_call_arguments.done", {"type": "response.function_call_arguments.done",
                                                         "item_id": item["id"], "output_index": 0, "arguments": item["arguments"]})
        ev("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item})
        ev("response.completed", {"type": "response.completed", "response": {
            "id": rid, "object": "response", "status": "completed", "output": [item],
            "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}})

    # OpenAI chat completions (aider: edits are in the text).
    def openai_chat(self, req):
        msgs = req.get("messages", [])
        system = " ".join(text_of(m.get("content")) for m in msgs if m.get("role") == "system")
        if "commit message" in system.lower():
            text = script.get("commit_message", "chore: scripted change")
        else:
            turns = sum(1 for m in msgs if m.get("role") == "assistant")
            s = step(turns, "")
            text = s.get("text", "")
        self.reply_json({"id": next_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                         "model": req.get("model"), "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if os.environ.get("SCRIPTED_TLS_CERT"):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.environ["SCRIPTED_TLS_CERT"], os.environ["SCRIPTED_TLS_KEY"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
