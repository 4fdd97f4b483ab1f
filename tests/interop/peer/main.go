// Command xavi-go-peer runs one real hashicorp/memberlist node (Debian's
// 0.2.2) for Xavi's interop tests, driven by JSON lines on stdin.
//
// Node mode (the default) starts a memberlist node from the flags, then
// reads one JSON command per line on stdin and writes one JSON object per
// line on stdout: a reply {"id":..., "ok":bool, ...} for each command and
// unsolicited events {"event":"join"|"leave"|"update"|"user"|"merge"|...}.
// memberlist's own log lines go to stderr unchanged.
//
// Codec mode (-mode codec) starts no node. It replies to commands that run Go's
// encoders on values the test supplies, so the Python codec can be checked
// byte for byte: lzw-compress, lzw-decompress, msgpack-encode and
// msgpack-decode of structs shaped like memberlist's wire structs.
//
// Commands in node mode: join {addrs}, leave {timeout_ms}, shutdown,
// members, set-meta {tags} or {meta_hex}, ping {node, addr},
// send-best-effort / send-reliable {node, payload_hex},
// keyring {op: install|use|remove|list, key}, local-node.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// out serialises writes to stdout so that replies and events never interleave.
type out struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *out) write(v map[string]interface{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.enc.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "[ERR] xavi-go-peer: stdout write failed: %v\n", err)
		os.Exit(3)
	}
}

var stdout = &out{enc: json.NewEncoder(os.Stdout)}

type command struct {
	ID        int               `json:"id"`
	Cmd       string            `json:"cmd"`
	Addrs     []string          `json:"addrs"`
	TimeoutMs int               `json:"timeout_ms"`
	Tags      map[string]string `json:"tags"`
	MetaHex   *string           `json:"meta_hex"`
	Node      string            `json:"node"`
	Addr      string            `json:"addr"`
	Payload   string            `json:"payload_hex"`
	Op        string            `json:"op"`
	Key       string            `json:"key"`
	Hex       string            `json:"hex"`
	Type      string            `json:"type"`
	Fields    json.RawMessage   `json:"fields"`
}

func reply(cmd *command, ok bool, fields map[string]interface{}) {
	if fields == nil {
		fields = map[string]interface{}{}
	}
	fields["id"] = cmd.ID
	fields["ok"] = ok
	stdout.write(fields)
}

func fail(cmd *command, err error) {
	reply(cmd, false, map[string]interface{}{"error": err.Error()})
}

func main() {
	opts := parseFlags()
	if opts.mode == "codec" {
		runCodec()
		return
	}
	if opts.mode != "node" {
		fmt.Fprintf(os.Stderr, "unknown -mode %q: use node or codec\n", opts.mode)
		os.Exit(2)
	}
	runNode(opts)
}

type options struct {
	mode, name, bind, preset, keys, tags, metaHex, userState string
	port, protocol, delegateMin, delegateMax, delegateCur    int
	compression, verifyIncoming, verifyOutgoing              bool
	probeIntervalMs, probeTimeoutMs, gossipIntervalMs        int
	suspicionMult, pushPullMs, tcpTimeoutMs, deadMs          int
}

func parseFlags() *options {
	o := &options{}
	flag.StringVar(&o.mode, "mode", "node", "node runs a memberlist node; codec answers encode/decode commands")
	flag.StringVar(&o.name, "name", "go-peer", "node name")
	flag.StringVar(&o.bind, "bind", "127.0.0.1", "bind and advertise address")
	flag.IntVar(&o.port, "port", 0, "bind port for UDP and TCP; 0 picks a free one")
	flag.StringVar(&o.preset, "preset", "local", "timing preset: lan, local or fast (fast is for tests)")
	flag.StringVar(&o.keys, "keys", "", "comma-separated base64 keys; the first is the primary key")
	flag.StringVar(&o.tags, "tags", "", "node metadata as a JSON object of strings, serf tag encoding")
	flag.StringVar(&o.metaHex, "meta-hex", "", "raw node metadata in hex; overrides -tags")
	flag.StringVar(&o.userState, "user-state-hex", "", "delegate state sent in push/pull, hex")
	flag.IntVar(&o.protocol, "protocol", 2, "memberlist protocol version to speak (1-5)")
	flag.IntVar(&o.delegateMin, "delegate-min", 2, "delegate protocol min (serf: 2; plain memberlist: 0)")
	flag.IntVar(&o.delegateMax, "delegate-max", 5, "delegate protocol max (serf: 5; plain memberlist: 0)")
	flag.IntVar(&o.delegateCur, "delegate-cur", 4, "delegate protocol version spoken (serf: 4)")
	flag.BoolVar(&o.compression, "compression", true, "enable LZW compression (memberlist's default)")
	flag.BoolVar(&o.verifyIncoming, "verify-incoming", true, "reject unencrypted packets when a key is set")
	flag.BoolVar(&o.verifyOutgoing, "verify-outgoing", true, "encrypt outgoing packets when a key is set")
	flag.IntVar(&o.probeIntervalMs, "probe-interval-ms", 0, "override ProbeInterval")
	flag.IntVar(&o.probeTimeoutMs, "probe-timeout-ms", 0, "override ProbeTimeout")
	flag.IntVar(&o.gossipIntervalMs, "gossip-interval-ms", 0, "override GossipInterval")
	flag.IntVar(&o.suspicionMult, "suspicion-mult", 0, "override SuspicionMult")
	flag.IntVar(&o.pushPullMs, "push-pull-ms", -1, "override PushPullInterval; 0 disables periodic push/pull")
	flag.IntVar(&o.tcpTimeoutMs, "tcp-timeout-ms", 0, "override TCPTimeout")
	flag.IntVar(&o.deadMs, "gossip-to-dead-ms", 0, "override GossipToTheDeadTime")
	flag.Parse()
	return o
}

func ms(v int) time.Duration { return time.Duration(v) * time.Millisecond }

func buildConfig(o *options, d *delegate) (*memberlist.Config, error) {
	var conf *memberlist.Config
	switch o.preset {
	case "lan":
		conf = memberlist.DefaultLANConfig()
	case "local":
		conf = memberlist.DefaultLocalConfig()
	case "fast":
		conf = memberlist.DefaultLocalConfig()
		conf.ProbeInterval = 300 * time.Millisecond
		conf.ProbeTimeout = 250 * time.Millisecond
		conf.GossipInterval = 20 * time.Millisecond
		conf.SuspicionMult = 1
		conf.SuspicionMaxTimeoutMult = 1
		conf.PushPullInterval = 0
		conf.TCPTimeout = 2 * time.Second
		conf.GossipToTheDeadTime = 2 * time.Second
	default:
		return nil, fmt.Errorf("unknown -preset %q: use lan, local or fast", o.preset)
	}
	conf.Name = o.name
	conf.BindAddr = o.bind
	conf.BindPort = o.port
	conf.AdvertiseAddr = o.bind
	conf.AdvertisePort = o.port
	conf.ProtocolVersion = uint8(o.protocol)
	conf.DelegateProtocolMin = uint8(o.delegateMin)
	conf.DelegateProtocolMax = uint8(o.delegateMax)
	conf.DelegateProtocolVersion = uint8(o.delegateCur)
	conf.EnableCompression = o.compression
	conf.GossipVerifyIncoming = o.verifyIncoming
	conf.GossipVerifyOutgoing = o.verifyOutgoing
	if o.probeIntervalMs > 0 {
		conf.ProbeInterval = ms(o.probeIntervalMs)
	}
	if o.probeTimeoutMs > 0 {
		conf.ProbeTimeout = ms(o.probeTimeoutMs)
	}
	if o.gossipIntervalMs > 0 {
		conf.GossipInterval = ms(o.gossipIntervalMs)
	}
	if o.suspicionMult > 0 {
		conf.SuspicionMult = o.suspicionMult
	}
	if o.pushPullMs >= 0 {
		conf.PushPullInterval = ms(o.pushPullMs)
	}
	if o.tcpTimeoutMs > 0 {
		conf.TCPTimeout = ms(o.tcpTimeoutMs)
	}
	if o.deadMs > 0 {
		conf.GossipToTheDeadTime = ms(o.deadMs)
	}
	if o.keys != "" {
		var keys [][]byte
		for _, k := range strings.Split(o.keys, ",") {
			raw, err := base64.StdEncoding.DecodeString(k)
			if err != nil {
				return nil, fmt.Errorf("invalid base64 in -keys: %v", err)
			}
			keys = append(keys, raw)
		}
		ring, err := memberlist.NewKeyring(keys[1:], keys[0])
		if err != nil {
			return nil, err
		}
		conf.Keyring = ring
	}
	conf.LogOutput = os.Stderr
	conf.Delegate = d
	conf.Events = d
	return conf, nil
}

func runNode(o *options) {
	d := &delegate{}
	if o.metaHex != "" {
		raw, err := hex.DecodeString(o.metaHex)
		if err != nil {
			fmt.Fprintf(os.Stderr, "invalid -meta-hex: %v\n", err)
			os.Exit(2)
		}
		d.meta = raw
	} else if o.tags != "" {
		var tags map[string]string
		if err := json.Unmarshal([]byte(o.tags), &tags); err != nil {
			fmt.Fprintf(os.Stderr, "invalid -tags: %v\n", err)
			os.Exit(2)
		}
		d.meta = encodeTags(tags)
	}
	if o.userState != "" {
		raw, err := hex.DecodeString(o.userState)
		if err != nil {
			fmt.Fprintf(os.Stderr, "invalid -user-state-hex: %v\n", err)
			os.Exit(2)
		}
		d.state = raw
	}
	conf, err := buildConfig(o, d)
	if err != nil {
		fmt.Fprintf(os.Stderr, "invalid configuration: %v\n", err)
		os.Exit(2)
	}
	list, err := memberlist.Create(conf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "memberlist.Create failed: %v\n", err)
		os.Exit(1)
	}
	d.list = list
	local := list.LocalNode()
	stdout.write(map[string]interface{}{
		"event": "ready", "name": local.Name, "addr": local.Addr.String(), "port": local.Port,
	})

	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for scanner.Scan() {
		var cmd command
		if err := json.Unmarshal(scanner.Bytes(), &cmd); err != nil {
			stdout.write(map[string]interface{}{"ok": false, "error": "invalid JSON command: " + err.Error()})
			continue
		}
		if handleNodeCommand(list, conf, d, &cmd) {
			return
		}
	}
	// stdin closed: the driver is gone, so stop at once.
	list.Shutdown()
}

// handleNodeCommand runs one command and returns true when the peer should exit.
func handleNodeCommand(list *memberlist.Memberlist, conf *memberlist.Config, d *delegate, cmd *command) bool {
	switch cmd.Cmd {
	case "join":
		n, err := list.Join(cmd.Addrs)
		if err != nil {
			reply(cmd, false, map[string]interface{}{"error": err.Error(), "joined": n})
		} else {
			reply(cmd, true, map[string]interface{}{"joined": n})
		}
	case "leave":
		timeout := ms(cmd.TimeoutMs)
		if timeout == 0 {
			timeout = time.Second
		}
		if err := list.Leave(timeout); err != nil {
			fail(cmd, err)
		} else {
			reply(cmd, true, nil)
		}
	case "shutdown":
		err := list.Shutdown()
		if err != nil {
			fail(cmd, err)
		} else {
			reply(cmd, true, nil)
		}
		return true
	case "members":
		var members []map[string]interface{}
		for _, n := range list.Members() {
			members = append(members, nodeJSON(n))
		}
		reply(cmd, true, map[string]interface{}{"members": members})
	case "local-node":
		reply(cmd, true, map[string]interface{}{"node": nodeJSON(list.LocalNode())})
	case "set-meta":
		if cmd.MetaHex != nil {
			raw, err := hex.DecodeString(*cmd.MetaHex)
			if err != nil {
				fail(cmd, err)
				return false
			}
			d.setMeta(raw)
		} else {
			d.setMeta(encodeTags(cmd.Tags))
		}
		timeout := ms(cmd.TimeoutMs)
		if timeout == 0 {
			timeout = time.Second
		}
		if err := list.UpdateNode(timeout); err != nil {
			fail(cmd, err)
		} else {
			reply(cmd, true, nil)
		}
	case "ping":
		addr, err := net.ResolveUDPAddr("udp", cmd.Addr)
		if err != nil {
			fail(cmd, err)
			return false
		}
		rtt, err := list.Ping(cmd.Node, addr)
		if err != nil {
			fail(cmd, err)
		} else {
			reply(cmd, true, map[string]interface{}{"rtt_ns": rtt.Nanoseconds()})
		}
	case "send-best-effort", "send-reliable":
		payload, err := hex.DecodeString(cmd.Payload)
		if err != nil {
			fail(cmd, err)
			return false
		}
		var target *memberlist.Node
		for _, n := range list.Members() {
			if n.Name == cmd.Node {
				target = n
			}
		}
		if target == nil {
			fail(cmd, fmt.Errorf("node %q is not a member", cmd.Node))
			return false
		}
		if cmd.Cmd == "send-best-effort" {
			err = list.SendBestEffort(target, payload)
		} else {
			err = list.SendReliable(target, payload)
		}
		if err != nil {
			fail(cmd, err)
		} else {
			reply(cmd, true, nil)
		}
	case "keyring":
		handleKeyring(conf, cmd)
	default:
		fail(cmd, fmt.Errorf("unknown command %q", cmd.Cmd))
	}
	return false
}

func handleKeyring(conf *memberlist.Config, cmd *command) {
	if conf.Keyring == nil {
		fail(cmd, fmt.Errorf("the peer was started without -keys, so it has no keyring"))
		return
	}
	var key []byte
	if cmd.Op != "list" {
		raw, err := base64.StdEncoding.DecodeString(cmd.Key)
		if err != nil {
			fail(cmd, fmt.Errorf("invalid base64 key: %v", err))
			return
		}
		key = raw
	}
	var err error
	switch cmd.Op {
	case "install":
		err = conf.Keyring.AddKey(key)
	case "use":
		err = conf.Keyring.UseKey(key)
	case "remove":
		err = conf.Keyring.RemoveKey(key)
	case "list":
	default:
		err = fmt.Errorf("unknown keyring op %q: use install, use, remove or list", cmd.Op)
	}
	if err != nil {
		fail(cmd, err)
		return
	}
	var keys []string
	for _, k := range conf.Keyring.GetKeys() {
		keys = append(keys, base64.StdEncoding.EncodeToString(k))
	}
	reply(cmd, true, map[string]interface{}{"keys": keys})
}

func nodeJSON(n *memberlist.Node) map[string]interface{} {
	return map[string]interface{}{
		"name": n.Name, "addr": n.Addr.String(), "port": n.Port,
		"meta_hex": hex.EncodeToString(n.Meta), "state": int(n.State),
		"vsn": []int{
			int(n.PMin), int(n.PMax), int(n.PCur), int(n.DMin), int(n.DMax), int(n.DCur),
		},
	}
}
