"""python3-libtorrent DHT session driven over stdin/stdout (JSON lines) for the interop test.
usage: /usr/bin/python3 lt_dht.py <bind-ip>
commands: {"cmd":"add_node","host":..,"port":..} {"cmd":"get_peers","ih":hex} {"cmd":"announce","ih":hex,"dir":path}
          {"cmd":"nodes"} {"cmd":"quit"}
events:   {"ready":true,"port":N} {"peers":[[ip,port],...],"ih":hex} {"announced_to_us":[ip,port],"ih":hex} {"nodes":N}
"""
import json, sys, threading, time
import libtorrent as lt

ip = sys.argv[1]
ses = lt.session({
    'listen_interfaces': '%s:0' % ip,
    'enable_dht': True,
    'enable_lsd': False,
    'enable_upnp': False,
    'enable_natpmp': False,
    'dht_bootstrap_nodes': '',
    'dht_restrict_routing_ips': False,
    'dht_restrict_search_ips': False,
    'dht_prefer_verified_node_ids': False,
    'dht_ignore_dark_internet': False,
    'alert_mask': lt.alert.category_t.dht_notification | lt.alert.category_t.status_notification | lt.alert.category_t.dht_operation_notification,
})
lock = threading.Lock()

def emit(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + '\n')
        sys.stdout.flush()

# wait for the listen socket
port = 0
for _ in range(100):
    port = ses.listen_port()
    if port:
        break
    time.sleep(0.05)
emit({'ready': True, 'port': port})

def alerts():
    while True:
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_get_peers_reply_alert):
                peers = [[p[0], p[1]] for p in a.peers()]
                emit({'peers': peers, 'ih': str(a.info_hash)})
            elif isinstance(a, lt.dht_announce_alert):
                emit({'announced_to_us': [a.ip, a.port], 'ih': str(a.info_hash)})
            elif isinstance(a, lt.dht_stats_alert):
                n = sum(b['num_nodes'] for b in a.routing_table)
                emit({'nodes': n})

threading.Thread(target=alerts, daemon=True).start()

for line in sys.stdin:
    try:
        c = json.loads(line)
    except ValueError:
        continue
    cmd = c.get('cmd')
    if cmd == 'add_node':
        ses.add_dht_node((c['host'], int(c['port'])))
    elif cmd == 'get_peers':
        ses.dht_get_peers(lt.sha1_hash(bytes.fromhex(c['ih'])))
    elif cmd == 'announce':
        # libtorrent announces a torrent to the DHT on its listen port once the torrent is added (DHT on).
        atp = lt.parse_magnet_uri('magnet:?xt=urn:btih:' + c['ih'])
        atp.save_path = c['dir']
        ses.add_torrent(atp)
    elif cmd == 'nodes':
        ses.post_dht_stats()
    elif cmd == 'quit':
        break
