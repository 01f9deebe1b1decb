"""A tiny OpenAI-compatible HTTP server for the profiles.py tests.

Speaks POST /v1/chat/completions and POST /v1/embeddings on 127.0.0.1 with
deterministic answers: a chat reply depends only on the system prompt (which
step F1..F4) and the first user message; an embedding is a unit vector seeded
by a hash of its text. Faults can be queued (see FakeOpenAI.fault); every
request is logged with its time, route, step and first user text / input.
"""
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

API_KEY = 'test-key-0123456789'


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
    h = short_hash(user)
    if step == 'F1':
        return {'summarization': f'<<OP {h}>> enjoys quiet dramas', 'reasoning': 'from the history'}
    if step == 'F2':
        return {'positive': [f'likes {h}'], 'negative': [f'dislikes {h}']}
    if step == 'F3':
        return {'latent_preferences': [f'latent {h}']}
    n = int(re.search(r'Write (\d+) new profiles', system).group(1))
    return {'profiles': [f'new profile {j} of {h}' for j in range(1, n + 1)]}


class FakeOpenAI:
    """fault(kind, route, times, step=None, **options) queues a fault for the next matching requests
    (times=-1: forever). Kinds: '429' (options retry_after), '500', 'slow' (delay, seconds),
    'malformed' (200 with a cut JSON body), 'not_json' (chat text that is not JSON), 'few_profiles'
    (F4 with one profile), 'wrong_dim' (embeddings one longer), 'wrong_count' (one embedding missing),
    '401' (error body that echoes the Authorization header)."""

    def __init__(self, dim=16, delay=0.0):
        self.dim, self.delay = dim, delay
        self.faults, self.log = [], []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                server.handle(self)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 drops bursts of connects (a 1 s SYN retry)

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

    def take_fault(self, route, step):
        with self.lock:
            for f in self.faults:
                if f['route'] == route and f['times'] != 0 and f['step'] in (None, step):
                    f['times'] -= 1
                    return f
        return None

    def requests(self, route=None, status=None):
        with self.lock:
            return [r for r in self.log if (route is None or r['route'] == route)
                    and (status is None or r['status'] == status)]

    # ------------------------------------------------------------------
    def handle(self, h):
        body = json.loads(h.rfile.read(int(h.headers.get('Content-Length', 0))) or b'{}')
        route = {'/v1/chat/completions': 'chat', '/v1/embeddings': 'embeddings'}.get(h.path)
        step, text = None, None
        if route == 'chat':
            step, text = step_of(body['messages'][0]['content']), body['messages'][1]['content']
        elif route == 'embeddings':
            text = body['input'][0]
        entry = dict(time=time.time(), route=route, step=step, text=text, n_messages=len(body.get('messages', [])),
                     auth=h.headers.get('Authorization'), status=200)
        with self.lock:
            self.log.append(entry)
        if route is None:
            return self.send(h, entry, 404, {'error': {'message': f'no route {h.path}'}})
        fault = self.take_fault(route, step)
        kind = fault['kind'] if fault else None
        if kind == '401' or h.headers.get('Authorization') != f'Bearer {API_KEY}':
            echo = h.headers.get('Authorization')  # as real servers echo (part of) a bad key
            return self.send(h, entry, 401, {'error': {'message': f'Incorrect API key: {echo}'}})
        if kind == '429':
            return self.send(h, entry, 429, {'error': {'message': 'rate limited'}},
                             {'Retry-After': str(fault.get('retry_after', 0))})
        if kind == '500':
            return self.send(h, entry, 500, {'error': {'message': 'server error'}})
        time.sleep(fault['delay'] if kind == 'slow' else self.delay)
        if kind == 'malformed':
            return self.send(h, entry, 200, None, raw=b'{"choices": [{"message": {"content": "')
        if route == 'chat':
            reply = json.dumps(chat_reply(step, body['messages'][0]['content'], text))
            if kind == 'not_json':
                reply = 'Sure! Here are the profiles you asked for, in prose.'
            if kind == 'few_profiles':
                reply = json.dumps({'profiles': ['only one']})
            return self.send(h, entry, 200, {
                'object': 'chat.completion', 'model': body['model'],
                'choices': [{'index': 0, 'message': {'role': 'assistant', 'content': reply}, 'finish_reason': 'stop'}],
                'usage': {'prompt_tokens': 10, 'completion_tokens': 5, 'total_tokens': 15}})
        dim = self.dim + (kind == 'wrong_dim')
        inputs = body['input'][:-1] if kind == 'wrong_count' else body['input']
        data = [{'object': 'embedding', 'index': i, 'embedding': text_vector(t, dim).tolist()}
                for i, t in enumerate(inputs)]
        return self.send(h, entry, 200, {'object': 'list', 'model': body['model'], 'data': data[::-1],  # any order
                                         'usage': {'prompt_tokens': 7, 'total_tokens': 7}})

    @staticmethod
    def send(h, entry, status, obj, headers=None, raw=None):
        entry['status'] = status
        data = raw if raw is not None else json.dumps(obj).encode()
        try:
            h.send_response(status)
            h.send_header('Content-Type', 'application/json')
            h.send_header('Content-Length', str(len(data)))
            for key, value in (headers or {}).items():
                h.send_header(key, value)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass
