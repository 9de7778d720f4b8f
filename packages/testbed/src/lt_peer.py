#!/usr/bin/python3
"""A scriptable libtorrent peer for the bitorrent test bed (run with /usr/bin/python3).

Usage: lt_peer.py '<json config>'
Config keys:
  mode            "seed" | "download"
  torrent         path to a .torrent            (or)
  magnet          magnet URI / bare hex info-hash
  save_path       directory holding (seed) or receiving (download) the data
  listen          "127.0.0.x:port" (port 0 = ephemeral)
  peers           [[host, port], ...] connected with connect_peer() after adding
  dht             bool (default False); dht_nodes [[host, port], ...]
  pex             bool (default True; ut_pex plugin)
  encryption      False (default): plaintext only; True: MSE allowed; "forced": RC4 only
  seed_mode       bool: trust data without checking (libtorrent still verifies on upload)
  upload_rate_limit / download_rate_limit   bytes/s (0 = unlimited)
  status_interval_ms  default 250
  exit_on_finish  bool: exit 0 once the download is complete
  peer_id_prefix  e.g. "-LT2080-"
  bench           bool: settings tuned for a single fast loopback transfer
Output: one JSON object per line on stdout, each with "event":
  listening{host,port}  added{info_hash,t}  metadata{info_hash,name,total_size}
  status{progress,state,peers,seeds,total_done,total_wanted,download_rate,upload_rate,
         total_upload,total_download,is_seeding,has_metadata}
  finished{elapsed (seconds since 'added'), total_done}  hash_failed{piece}
  peer_connected/peer_disconnected{ip,port}  peer_banned{ip}  error{message}
Stdin: JSON lines {"cmd":"connect","host":..,"port":..} | {"cmd":"status"} | {"cmd":"quit"}
       {"cmd":"dht_node","host":..,"port":..}
"""
import json
import os
import queue
import sys
import threading
import time

import libtorrent as lt

out_lock = threading.Lock()


def emit(event, **kw):
    kw["event"] = event
    line = json.dumps(kw, separators=(",", ":"))
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main():
    cfg = json.loads(sys.argv[1])
    mode = cfg.get("mode", "download")
    listen = cfg.get("listen", "127.0.0.1:0")
    dht = bool(cfg.get("dht", False))
    enc_cfg = cfg.get("encryption", False)
    enc = bool(enc_cfg)
    forced = enc_cfg == "forced"
    settings = {
        "listen_interfaces": listen,
        "outgoing_interfaces": listen.rsplit(":", 1)[0],
        "enable_dht": dht,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_tcp": True,
        "enable_incoming_tcp": True,
        "allow_multiple_connections_per_ip": True,
        "anonymous_mode": False,
        # Only the categories handled below. all_categories also turns on the log alerts (peer_log,
        # picker_log, ...), and this harness's libtorrent 2.0.8 has crashed intermittently in libstdc++
        # (GPF, same offset each time) while bitorrent was serving it; we never read those alerts.
        "alert_mask": (lt.alert.category_t.status_notification | lt.alert.category_t.error_notification
                       | lt.alert.category_t.peer_notification | lt.alert.category_t.connect_notification
                       | lt.alert.category_t.storage_notification | lt.alert.category_t.tracker_notification
                       | lt.alert.category_t.dht_notification),
        "out_enc_policy": lt.enc_policy.forced if forced else lt.enc_policy.enabled if enc else lt.enc_policy.disabled,
        "in_enc_policy": lt.enc_policy.forced if forced else lt.enc_policy.enabled if enc else lt.enc_policy.disabled,
        "allowed_enc_level": lt.enc_level.rc4 if forced else lt.enc_level.both,
        "upload_rate_limit": int(cfg.get("upload_rate_limit", 0)),
        "download_rate_limit": int(cfg.get("download_rate_limit", 0)),
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_prefer_verified_node_ids": False,
        "dht_ignore_dark_internet": False,
        "peer_fingerprint": cfg.get("peer_id_prefix", "-LT2080-"),
        "user_agent": "libtorrent-testbed/" + lt.__version__,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "smooth_connects": False,
        "connection_speed": 200,
        "min_reconnect_time": 1,
        "auto_manage_startup": 1,
        "validate_https_trackers": False,
    }
    # libtorrent refuses to connect to peers on the local network in some configurations;
    # loopback interop needs local peers treated like any other.
    if cfg.get("bench"):
        settings.update({
            "send_buffer_watermark": 4 * 1024 * 1024,
            "send_buffer_watermark_factor": 150,
            "send_buffer_low_watermark": 1024 * 1024,
            "max_queued_disk_bytes": 16 * 1024 * 1024,
            "request_queue_time": 2,
            "max_out_request_queue": 1500,
            "max_allowed_in_request_queue": 2000,
            "aio_threads": 4,
            "hashing_threads": 2,
        })
    ses = lt.session(settings)
    if dht:
        for host, port in cfg.get("dht_nodes", []):
            ses.add_dht_node((host, int(port)))

    # Wait for the listen socket so we can report the real port.
    port = 0
    deadline = time.time() + 10
    while time.time() < deadline:
        port = ses.listen_port()
        if port:
            break
        ses.wait_for_alert(50)
        ses.pop_alerts()
    host = listen.rsplit(":", 1)[0]
    emit("listening", host=host, port=port)

    if cfg.get("magnet"):
        m = cfg["magnet"]
        if not m.startswith("magnet:"):
            m = "magnet:?xt=urn:btih:" + m
        params = lt.parse_magnet_uri(m)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(cfg["torrent"])
    params.save_path = cfg["save_path"]
    flags = params.flags
    if not cfg.get("pex", True):
        pass  # ut_pex is a session plugin; per-torrent disabling is not available in 2.0.8
    if cfg.get("seed_mode"):
        flags |= lt.torrent_flags.seed_mode
    flags &= ~lt.torrent_flags.auto_managed
    flags &= ~lt.torrent_flags.paused
    params.flags = flags
    t_added = time.monotonic()
    h = ses.add_torrent(params)
    # Session-wide limits do not apply to peers on the local network (libtorrent's local
    # peer class); per-torrent limits apply to every peer, loopback included.
    if int(cfg.get("upload_rate_limit", 0)) > 0:
        h.set_upload_limit(int(cfg["upload_rate_limit"]))
    if int(cfg.get("download_rate_limit", 0)) > 0:
        h.set_download_limit(int(cfg["download_rate_limit"]))
    emit("added", info_hash=str(h.info_hash()), t=time.time())
    for phost, pport in cfg.get("peers", []):
        h.connect_peer((phost, int(pport)))

    cmds = queue.Queue()

    def reader():
        for line in sys.stdin:
            line = line.strip()
            if line:
                try:
                    cmds.put(json.loads(line))
                except ValueError:
                    emit("error", message="bad command: " + line)
        cmds.put({"cmd": "stdin_closed"})

    threading.Thread(target=reader, daemon=True).start()

    interval = cfg.get("status_interval_ms", 250) / 1000.0
    next_status = 0.0
    finished = False
    exit_on_finish = bool(cfg.get("exit_on_finish", False))
    # A seed whose data is present reports finished after checking; do not treat that as a
    # download completion for timing, but still report it.

    def status_obj():
        s = h.status()
        return dict(
            progress=s.progress,
            state=str(s.state),
            peers=s.num_peers,
            seeds=s.num_seeds,
            total_done=s.total_done,
            total_wanted=s.total_wanted,
            download_rate=s.download_rate,
            upload_rate=s.upload_rate,
            total_upload=s.all_time_upload,
            total_download=s.all_time_download,
            is_seeding=s.is_seeding,
            has_metadata=s.has_metadata,
            errc=s.errc.message() if s.errc.value() else "",
        )

    running = True
    while running:
        ses.wait_for_alert(int(min(interval, 0.05) * 1000))
        for a in ses.pop_alerts():
            if isinstance(a, lt.metadata_received_alert):
                ti = h.torrent_file()
                emit("metadata", info_hash=str(h.info_hash()), name=ti.name(), total_size=ti.total_size())
            elif isinstance(a, lt.torrent_finished_alert):
                if not finished:
                    finished = True
                    st = h.status()
                    emit("finished", elapsed=time.monotonic() - t_added, total_done=st.total_done)
                    if exit_on_finish:
                        running = False
            elif isinstance(a, lt.hash_failed_alert):
                emit("hash_failed", piece=a.piece_index)
            elif isinstance(a, lt.peer_connect_alert):
                emit("peer_connected", ip=a.endpoint[0], port=a.endpoint[1])
            elif isinstance(a, lt.peer_disconnected_alert):
                emit("peer_disconnected", ip=a.endpoint[0], port=a.endpoint[1], reason=a.message())
            elif isinstance(a, lt.peer_ban_alert):
                emit("peer_banned", ip=a.endpoint[0], port=a.endpoint[1])
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                emit("error", message=a.message())
            elif isinstance(a, lt.tracker_error_alert):
                emit("tracker_error", message=a.message())
            elif isinstance(a, lt.tracker_reply_alert):
                emit("tracker_reply", peers=a.num_peers, url=a.tracker_url())
            elif isinstance(a, lt.listen_failed_alert):
                emit("error", message=a.message())
        while True:
            try:
                c = cmds.get_nowait()
            except queue.Empty:
                break
            cmd = c.get("cmd")
            if cmd == "connect":
                h.connect_peer((c["host"], int(c["port"])))
            elif cmd == "dht_node":
                ses.add_dht_node((c["host"], int(c["port"])))
            elif cmd == "status":
                emit("status", **status_obj())
            elif cmd == "quit":
                running = False
            elif cmd == "stdin_closed":
                pass
        now = time.monotonic()
        if now >= next_status:
            next_status = now + interval
            emit("status", **status_obj())
    emit("status", **status_obj())
    emit("exit")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report and exit non-zero
        emit("error", message="%s: %s" % (type(e).__name__, e))
        sys.stdout.flush()
        os._exit(1)
