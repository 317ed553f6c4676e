"""A phone's whole life through the generated Python bindings, against the
real trustees and dispatch service (`sosvault demo`: three trustees, the
dispatch service and its simulated teams, all over TLS on loopback).

The bindings do the cryptography; this file does what an app's own code
does: HTTP, JSON, base64, and waiting for the incident to move. Run it with
`crates/sosvault-ffi/bindings.sh` (it builds the library, generates the
bindings and points SOSVAULT_BINDINGS at them).
"""

import base64
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.environ.get("SOSVAULT_BINDINGS", "target/bindings/python"))
import sosvault_ffi as sv  # noqa: E402  (generated: on the path only now)

BIN = os.environ.get("SOSVAULT_BIN", "target/debug")
PIN, DURESS_PIN = "2468", "1357"
# Talwandi, Kota: the demo's teams patrol around it.
TALWANDI = (25.1425, 75.8350)


def b64(data):
    return base64.b64encode(bytes(data)).decode()


def unb64(text):
    return base64.b64decode(text)


def now():
    return int(time.time())


def fix(lat, lon):
    return sv.Fix(lat=lat, lon=lon, accuracy_m=10, at=now())


class Demo:
    """`sosvault demo`, started on a free port; what it prints tells where."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "sosvault"), "demo", "--listen", "127.0.0.1:0",
             "--students", "2", "--seconds", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.seen = []
        deadline = time.monotonic() + 120
        wanted = {"control": r"^Control room: (https://\S+)",
                  "phone": r"^Phone on the command line: .*--manifest (\S+) --authority (\S+) --ca (\S+)",
                  "login": r"^Login: (\S+) / (\S+)"}
        found = {}
        while len(found) < len(wanted):
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the demo exited before saying where it listens:\n"
                                   + "".join(self.seen))
            if time.monotonic() > deadline:
                raise RuntimeError("the demo did not say where it listens:\n" + "".join(self.seen))
            self.seen.append(line)
            for key, pattern in wanted.items():
                m = re.search(pattern, line)
                if m:
                    found[key] = m.groups()
        self.url = found["control"][0].rstrip("/")
        self.manifest_path, self.authority, ca = found["phone"]
        self.operator = found["login"]
        self.tls = ssl.create_default_context(cafile=ca)

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def call(self, method, path, body=None, token=None):
        """(status, JSON answer) of a request to the dispatch service."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = "Bearer " + token
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.tls, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def post(self, path, body, expect=(200, 202)):
        status, answer = self.call("POST", path, body)
        if status not in expect:
            raise AssertionError(f"POST {path}: {status} {answer}")
        return answer


class PhoneLife(unittest.TestCase):
    """One student's phone from set-up to stop; each step asserts what the
    bindings let the app believe, and what they refuse."""

    @classmethod
    def setUpClass(cls):
        cls.demo = Demo()

    @classmethod
    def tearDownClass(cls):
        cls.demo.stop()

    def enroll(self, phone, deployment, profile):
        """Enrolls (or re-enrolls) and confirms with the trustees' receipts."""
        package = phone.enroll(deployment, profile, now())
        answer = self.demo.post("/v1/enroll", {"package": b64(package)})
        receipts = [unb64(r) for r in answer["receipts"]]
        self.assertEqual(len(receipts), len(deployment.trustee_names()))
        # One receipt short: the phone stays where it was.
        before = phone.epoch()
        with self.assertRaises(sv.VaultError.BadReceipt):
            phone.confirm_enrollment(receipts[1:], now())
        self.assertEqual(phone.epoch(), before)
        commit = phone.confirm_enrollment(receipts, now())
        self.assertEqual(phone.epoch(), before + 1)
        answer = self.demo.post("/v1/enroll/commit", {"commit": b64(commit)})
        self.assertEqual(answer["status"], "committed")

    def enrolled_phone(self, name, number):
        """A new phone of student `name`, enrolled to the demo's verified
        deployment: the deployment, its PIN lock and the phone."""
        with open(self.demo.manifest_path, "rb") as f:
            deployment = sv.Deployment.verify(f.read(), self.demo.authority, now())
        pins = sv.PinLock.create(PIN, DURESS_PIN)
        phone = sv.Phone.create()
        profile = sv.StudentProfile(
            name=name, phone=number, photo="", address="",
            hostel="", institute="", guardian_name="", guardian_phone="",
            blood_group="", medical_notes="")
        self.enroll(phone, deployment, profile)
        return deployment, pins, phone

    def status(self, phone, deployment, panic):
        query = phone.status_query(deployment, panic.hash, now())
        answer = self.demo.post("/v1/incident/status", {"query": b64(query.bytes())})
        return query, phone.read_status(deployment, query, unb64(answer["report"]))

    def follow_until(self, phone, deployment, panic, done, seconds=90):
        """Asks as the phone's screen does, every half second, until `done`
        holds of the verified status (bounded); the stages seen."""
        seen = []
        deadline = time.monotonic() + seconds
        while True:
            _, st = self.status(phone, deployment, panic)
            if not seen or seen[-1] != st.stage:
                seen.append(st.stage)
            if done(st):
                return st, seen
            if time.monotonic() > deadline:
                self.fail(f"the incident did not get there; stages seen: {seen}")
            time.sleep(0.5)

    def test_a_panic_by_sms(self):
        """No data: the same press goes by SMS; the gateway hands the text
        over, and the phone's later HTTP panic joins the same incident."""
        demo = self.demo
        deployment, pins, phone = self.enrolled_phone("Priya Nair", "+91 94140 77777")
        # The channel is fetched while data works and kept; another key's
        # channel is refused and nothing is signed.
        status, answer = demo.call("GET", "/v1/sms/channel")
        self.assertEqual(status, 200, answer)
        channel = unb64(answer["channel"])
        with self.assertRaises(sv.VaultError.BadInput):
            phone.panic_with_sms(deployment, channel[:-1], sv.Category.POLICE,
                                 fix(*TALWANDI), now())
        both = phone.panic_with_sms(deployment, channel, sv.Category.POLICE,
                                    fix(*TALWANDI), now())
        self.assertEqual(both.number, "+917440000100")
        self.assertLessEqual(len(both.text), 306)
        # The SMS gateway hands the text over, under its own token.
        token_file = os.path.join(os.path.dirname(demo.manifest_path), "dispatch",
                                  "sms-inbound.token")
        with open(token_file) as f:
            token = f.read().strip()
        status, refused = demo.call("POST", "/v1/sms/inbound", {"text": both.text})
        self.assertEqual((status, refused["error"]), (401, "unauthorized"))
        status, answer = demo.call("POST", "/v1/sms/inbound", {"text": both.text}, token=token)
        self.assertEqual((status, answer["new"]), (202, True), answer)
        incident = answer["incident_id"]
        # Data is back: the phone follows under the SMS panic's hash, then
        # sends the HTTP panic, which joins the incident.
        st, seen = self.follow_until(phone, deployment, both.sms, lambda s: s.help_is_coming)
        self.assertEqual(st.stage, sv.Stage.TEAM_ON_THE_WAY, seen)
        answer = demo.post("/v1/panic", {"panic": b64(both.panic.bytes)})
        self.assertEqual((answer["incident_id"], answer["new"]), (incident, False))
        # Safe: a cancel naming the HTTP panic ends the incident both were.
        cancel = phone.cancel(deployment, both.panic.hash, pins, PIN, now())
        answer = demo.post("/v1/cancel", {"cancel": b64(cancel.bytes)})
        self.assertEqual(answer["status"], "received", answer)
        st, _ = self.follow_until(phone, deployment, both.sms,
                                  lambda s: s.stage == sv.Stage.CLOSED_BY_STUDENT)
        self.assertEqual(st.stage, sv.Stage.CLOSED_BY_STUDENT)

    def test_silent_chat(self):
        """The phone opens its incident's chat; the control room writes
        first; the phone reads it (under the control room's key, for its own
        query) and answers; a cancelled incident's chat reads closed."""
        demo = self.demo
        deployment, pins, phone = self.enrolled_phone("Meera Joshi", "+91 94140 88888")
        panic = phone.panic(deployment, sv.Category.POLICE, fix(*TALWANDI), now())
        incident = demo.post("/v1/panic", {"panic": b64(panic.bytes)})["incident_id"]

        def chat(start=0):
            query = phone.chat_query(deployment, panic.hash, start, now())
            answer = demo.post("/v1/incident/chat", {"query": b64(query.bytes())})
            return query, answer, phone.read_chat(deployment, query, unb64(answer["log"]))

        # The first question opens the chat: its recipient, no texts yet.
        first, first_answer, c = chat()
        self.assertTrue(c.open)
        self.assertEqual((len(c.recipient), c.texts), (32, []))
        # An answer to another query is not believed.
        other = phone.chat_query(deployment, panic.hash, 0, now())
        with self.assertRaises(sv.VaultError.BadReport):
            phone.read_chat(deployment, other, unb64(first_answer["log"]))
        # The control room writes first.
        user, password = demo.operator
        status, login = demo.call("POST", "/v1/operator/login",
                                  {"username": user, "password": password})
        self.assertEqual(status, 200, login)
        path = f"/v1/operator/incidents/{incident}/chat"
        status, answer = demo.call("POST", path, {"text": "Are you able to talk?"},
                                   token=login["token"])
        self.assertEqual((status, answer.get("index")), (200, 0), answer)
        _, _, c = chat()
        self.assertEqual([(t.side, t.text) for t in c.texts],
                         [(sv.ChatSide.CONTROL_ROOM, "Are you able to talk?")])
        # The phone answers; the control room reads it.
        with self.assertRaises(sv.VaultError.BadInput):
            phone.chat_message(panic.hash, c.recipient, "   ", now())
        message = phone.chat_message(panic.hash, c.recipient, "No. He is next to me.", now())
        answer = demo.post("/v1/incident/chat/send", {"message": b64(message.bytes)})
        self.assertEqual(answer, {"status": "stored", "index": 1})
        status, view = demo.call("GET", path, token=login["token"])
        self.assertEqual([t["text"] for t in view["texts"]],
                         ["Are you able to talk?", "No. He is next to me."])
        _, _, later = chat(1)
        self.assertEqual([(t.index, t.side) for t in later.texts], [(1, sv.ChatSide.STUDENT)])
        # Safe: after the cancel the chat is closed, and nothing is in it.
        cancel = phone.cancel(deployment, panic.hash, pins, PIN, now())
        demo.post("/v1/cancel", {"cancel": b64(cancel.bytes)})
        _, _, c = chat()
        self.assertEqual((c.open, c.recipient, c.texts), (False, b"", []))

    def test_a_whole_life(self):
        demo = self.demo
        with open(demo.manifest_path, "rb") as f:
            manifest = f.read()
        # The trust anchor: the manifest under the authority key the app
        # ships with, and nothing else.
        with self.assertRaises(sv.VaultError.Manifest):
            sv.Deployment.verify(manifest, "11" * 32, now())
        deployment = sv.Deployment.verify(manifest, demo.authority, now())
        self.assertEqual(deployment.threshold(), 2)

        pins = sv.PinLock.create(PIN, DURESS_PIN)
        pins = sv.PinLock.restore(pins.save())
        phone = sv.Phone.create()
        profile = sv.StudentProfile(
            name="Meera Joshi", phone="+91 94140 55555", photo="", address="",
            hostel="Shanti Girls Hostel, room 7", institute="", guardian_name="Sunita Joshi",
            guardian_phone="094140 66666", blood_group="O+", medical_notes="")
        with self.assertRaises(sv.VaultError.NotEnrolled):
            phone.panic(deployment, sv.Category.POLICE, fix(*TALWANDI), now())
        self.enroll(phone, deployment, profile)
        # The app keeps its state between launches.
        phone = sv.Phone.restore(phone.save())
        self.assertEqual(phone.epoch(), 1)

        # A walk before the panic, sealed to the student's own vault: the
        # control room keeps it and can read none of it until a release.
        walk = [fix(25.1400, 75.8300), fix(25.1410, 75.8320)]
        for step in walk:
            point = phone.trail_point(step, now())
            self.assertEqual(demo.post("/v1/trail", {"point": b64(point.bytes)})["status"], "stored")

        # Panic, then follow: "help is coming" only once a team acknowledged.
        panic = phone.panic(deployment, sv.Category.POLICE, fix(*TALWANDI), now())
        answer = demo.post("/v1/panic", {"panic": b64(panic.bytes)})
        incident = answer["incident_id"]
        st, seen = self.follow_until(phone, deployment, panic, lambda s: s.help_is_coming)
        self.assertEqual(st.stage, sv.Stage.TEAM_ON_THE_WAY, seen)
        self.assertNotIn(sv.Stage.TEAM_ON_THE_WAY, seen[:-1])
        self.assertTrue(all(s in (sv.Stage.RECEIVED, sv.Stage.TEAM_SENT) for s in seen[:-1]), seen)
        self.assertEqual(st.team.kind, sv.TeamKind.POLICE)
        self.assertEqual(st.threshold, 2)
        # A report is believed for its own query only.
        query, _ = self.status(phone, deployment, panic)
        other, _ = self.status(phone, deployment, panic)
        answer = demo.post("/v1/incident/status", {"query": b64(query.bytes())}, expect=(409,))
        self.assertEqual(answer["error"], "replayed")
        # Another phone asking about this panic learns what it would of a
        # panic never sent.
        stranger = sv.Phone.create()
        theirs = stranger.status_query(deployment, panic.hash, now())
        status, answer = demo.call("POST", "/v1/incident/status", {"query": b64(theirs.bytes())})
        self.assertEqual((status, answer["error"]), (404, "unknown_incident"))
        fresh = phone.status_query(deployment, panic.hash, now())
        report = unb64(demo.post("/v1/incident/status", {"query": b64(fresh.bytes())})["report"])
        with self.assertRaises(sv.VaultError.BadReport):
            phone.read_status(deployment, other, report)

        # The student moves; the location goes sealed to the control room.
        moved = phone.location_update(deployment, panic.hash, fix(25.1450, 75.8390), now())
        demo.post("/v1/location", {"update": b64(moved.bytes)})

        # Who read the profile: the control room's log, each entry proven
        # against a head signed by the log key pinned at set-up.
        _, info = demo.call("GET", "/v1/info")
        log_key = info["log_public_key"]
        st, _ = self.follow_until(phone, deployment, panic, lambda s: s.opened_at is not None)
        self.assertEqual(st.released, 2)
        # A supervisor opens the profile with a reason, which the student sees.
        user, password = demo.operator
        token = demo.post("/v1/operator/login", {"username": user, "password": password})["token"]
        why = "checking the hostel address for the team"
        status, seen_by_op = demo.call(
            "GET", f"/v1/operator/incidents/{incident}?reason={urllib.parse.quote(why)}", token=token)
        self.assertEqual(status, 200, seen_by_op)
        self.assertEqual(seen_by_op["profile"]["hostel"], "Shanti Girls Hostel, room 7")
        # The walk, opened with the released vault key, beside the profile.
        trail = [(round(p["lat"], 6), round(p["lon"], 6)) for p in seen_by_op["sealed_trail"]["points"]]
        self.assertEqual(trail, [(round(f.lat, 6), round(f.lon, 6)) for f in walk])
        lines = self.read_own_log(phone, deployment, log_key)
        # The guardian was told by SMS after the release (the demo's
        # loopback gateway), and the phone reads it in its own entries.
        deadline = time.monotonic() + 15
        while not any(l.kind == "guardian-told" and l.incident == incident for l in lines):
            if time.monotonic() > deadline:
                self.fail(f"no guardian-told entry for the incident: {lines}")
            time.sleep(0.5)
            lines = self.read_own_log(phone, deployment, log_key)
        mine = [l for l in lines if l.kind == "profile-viewed-with-reason"]
        self.assertEqual([(l.viewer, l.reason, l.incident) for l in mine],
                         [("operator:" + user, why, incident)], lines)
        with self.assertRaises(sv.VaultError.BadLog):
            self.read_own_log(phone, deployment, "22" * 32)

        # "I am safe": a wrong PIN signs nothing; the PIN cancels, and the
        # trustees confirm with signed receipts.
        with self.assertRaises(sv.VaultError.WrongPin):
            phone.cancel(deployment, panic.hash, pins, "0000", now())
        cancel = phone.cancel(deployment, panic.hash, pins, PIN, now())
        answer = demo.post("/v1/cancel", {"cancel": b64(cancel.bytes)})
        confirmed = phone.confirmed(
            deployment, sv.Confirmation.CANCEL, cancel.hash, [unb64(r) for r in answer["receipts"]])
        self.assertEqual(confirmed + answer["pending"], 3, answer)
        self.assertGreaterEqual(confirmed, 1, answer)
        _, st = self.status(phone, deployment, panic)
        self.assertEqual(st.stage, sv.Stage.CLOSED_BY_STUDENT)
        self.assertFalse(st.help_is_coming)

        # After an incident the phone re-enrolls: a new vault key, epoch 2.
        self.enroll(phone, deployment, profile)
        self.assertEqual(phone.epoch(), 2)

        # Walk me home: a twenty-minute timer, then "I got there" with the
        # PIN; the trustees confirm as for a cancel, and the phone's view
        # of the timer reads closed by the student.
        timer = phone.start_timer(deployment, sv.Category.POLICE, fix(*TALWANDI), now() + 1200, now())
        held = demo.post("/v1/timers", {"timed_panic": b64(timer.bytes)})
        self.assertEqual(held["status"], "held", held)
        with self.assertRaises(sv.VaultError.WrongPin):
            phone.check_in(deployment, timer.hash, pins, "0000", now())
        arrived = phone.check_in(deployment, timer.hash, pins, PIN, now())
        answer = demo.post("/v1/check-in", {"check_in": b64(arrived.bytes)})
        confirmed = phone.confirmed(
            deployment, sv.Confirmation.CANCEL, arrived.hash, [unb64(r) for r in answer["receipts"]])
        self.assertEqual(confirmed + answer["pending"], 3, answer)
        self.assertGreaterEqual(confirmed, 1, answer)
        _, st = self.status(phone, deployment, timer)
        self.assertEqual(st.stage, sv.Stage.CLOSED_BY_STUDENT)
        self.assertEqual(st.released, 0)

        # Stop: everything wiped, every trustee's shred receipt.
        stop = phone.stop(deployment, pins, PIN, now())
        answer = demo.post("/v1/stop", {"stop": b64(stop.bytes)})
        shredded = phone.confirmed(
            deployment, sv.Confirmation.STOP, stop.hash, [unb64(r) for r in answer["receipts"]])
        self.assertEqual(shredded + answer["pending"], 3, answer)
        self.assertGreaterEqual(shredded, 1, answer)
        with self.assertRaises(sv.VaultError.Stopped):
            phone.panic(deployment, sv.Category.POLICE, fix(*TALWANDI), now())

    def read_own_log(self, phone, deployment, log_key):
        query = phone.log_query(deployment.control_room_log_holder(), now())
        answer = self.demo.post("/v1/log/mine", {"query": b64(query)})
        entries = [
            sv.ProvenEntry(
                index=e["index"], entry=unb64(e["entry"]),
                proof=[unb64(p) for p in e["proof"]],
                reason=e.get("reason"),
                reason_nonce=unb64(e["reason_nonce"]) if e.get("reason_nonce") else None)
            for e in answer["entries"]
        ]
        return sv.read_log(phone.student_id(), log_key, unb64(answer["head"]), entries)


if __name__ == "__main__":
    unittest.main()
