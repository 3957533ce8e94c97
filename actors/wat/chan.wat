;; chan: a theater:simple actor that opens, uses and accepts channels, for the channel tests.
;; State: a text log of the channel events this actor saw, one line each (appended):
;;   "open <channel-id> <initial message>", "msg <channel-id> <message>", "close <channel-id>".
;;   handle-channel-open    initial message "no" -> refuses with message "not today";
;;                          anything else -> accepts (no message); logs "open ..."
;;   handle-channel-message logs "msg ..."       handle-channel-close logs "close ..."
;;   handle-request         'o' TARGET          -> open-channel(TARGET, "hello"): replies the id or "ERR:" + error
;;                          'r' TARGET          -> open-channel(TARGET, "no"): the same
;;                          's' ID 0x00 MSG     -> send-on-channel(ID, MSG): replies "ok" or "ERR:" + error
;;                          'c' ID              -> close-channel(ID): replies "ok" or "ERR:" + error
;;                          anything else       -> replies the state (the log)
;;   handle-send            keeps state
;;
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
;; Layout: 0..1023 static strings, 1024.. export return area, 1088.. import return area, 8192.. heap.
(component
  (import "theater:simple/message-server-host" (instance $msh
    (export "open-channel" (func (param "actor-id" string) (param "initial-msg" (list u8))
                                 (result (result string (error string)))))
    (export "send-on-channel" (func (param "channel-id" string) (param "msg" (list u8))
                                    (result (result (error string)))))
    (export "close-channel" (func (param "channel-id" string) (result (result (error string)))))))

  (core module $mem
    (memory (export "memory") 2)
    (global $heap-base i32 (i32.const 8192))
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq
                (memory.grow (i32.shr_u
                  (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                  (i32.const 16)))
                (i32.const -1))
            (then unreachable))))
      (global.set $next (local.get $end))
      (if (local.get $old-size)
        (then (memory.copy (local.get $p) (local.get $old)
          (select (local.get $old-size) (local.get $size)
            (i32.lt_u (local.get $old-size) (local.get $size))))))
      (local.get $p))
    (func (export "reset") (param i32)
      (global.set $next (global.get $heap-base))))
  (core instance $mem (instantiate $mem))
  (alias core export $mem "memory" (core memory $memory))

  (core func $open (canon lower (func $msh "open-channel") (memory $memory) (realloc (core func $mem "realloc"))))
  (core func $csend (canon lower (func $msh "send-on-channel") (memory $memory) (realloc (core func $mem "realloc"))))
  (core func $close (canon lower (func $msh "close-channel") (memory $memory) (realloc (core func $mem "realloc"))))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    ;; open-channel(target ptr, len, msg ptr, len, return-area): result<string, string>
    (import "msh" "open" (func $open (param i32 i32 i32 i32 i32)))
    ;; send-on-channel(id ptr, len, msg ptr, len, return-area): result<_, string>
    (import "msh" "csend" (func $csend (param i32 i32 i32 i32 i32)))
    ;; close-channel(id ptr, len, return-area): result<_, string>
    (import "msh" "close" (func $close (param i32 i32 i32)))
    (data (i32.const 64) "hello")
    (data (i32.const 72) "no")
    (data (i32.const 80) "not today")          ;; 9
    (data (i32.const 96) "ok")
    (data (i32.const 100) "ERR:")
    (data (i32.const 112) "open ")
    (data (i32.const 120) "msg ")
    (data (i32.const 128) "close ")
    (global $ret i32 (i32.const 1024))
    (global $iret i32 (i32.const 1088))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func $ok-reply (param $d i32) (param $p i32) (param $l i32) (param $rp i32) (param $rl i32) (result i32)
      (drop (call $ok (local.get $d) (local.get $p) (local.get $l)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (local.get $rp))
      (i32.store offset=24 (global.get $ret) (local.get $rl))
      (global.get $ret))

    ;; a fresh buffer holding a ++ b ++ c ++ d ++ "\n"; its length at 1080
    (func $cat (param $ap i32) (param $al i32) (param $bp i32) (param $bl i32) (param $cp i32) (param $cl i32)
               (param $dp i32) (param $dl i32) (result i32)
      (local $buf i32) (local $n i32)
      (local.set $n (i32.add (i32.add (i32.add (i32.add (local.get $al) (local.get $bl)) (local.get $cl))
                                      (local.get $dl)) (i32.const 1)))
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $n)))
      (memory.copy (local.get $buf) (local.get $ap) (local.get $al))
      (memory.copy (i32.add (local.get $buf) (local.get $al)) (local.get $bp) (local.get $bl))
      (memory.copy (i32.add (local.get $buf) (i32.add (local.get $al) (local.get $bl))) (local.get $cp) (local.get $cl))
      (memory.copy (i32.add (local.get $buf) (i32.add (i32.add (local.get $al) (local.get $bl)) (local.get $cl)))
                   (local.get $dp) (local.get $dl))
      (i32.store8 (i32.add (local.get $buf) (i32.sub (local.get $n) (i32.const 1))) (i32.const 10))
      (i32.store (i32.const 1080) (local.get $n))
      (local.get $buf))

    ;; the state (none counts as empty) with one more log line: prefix ++ id ++ " " ++ text
    (func $log-line (param $d i32) (param $p i32) (param $l i32) (param $prefix i32) (param $pl i32)
                    (param $ip i32) (param $il i32) (param $tp i32) (param $tl i32) (result i32)
      (local $head i32) (local $hl i32) (local $line i32) (local $ll i32) (local $tail i32)
      (if (i32.eqz (local.get $d)) (then (local.set $l (i32.const 0))))
      ;; line = prefix ++ id ++ " " ++ text (a space only when there is text)
      (local.set $line (call $cat (local.get $prefix) (local.get $pl) (local.get $ip) (local.get $il)
                                  (i32.const 140) (select (i32.const 1) (i32.const 0) (local.get $tl))
                                  (local.get $tp) (local.get $tl)))
      (local.set $ll (i32.load (i32.const 1080)))
      ;; new state = old ++ line (cat adds a newline: drop it, the line has its own)
      (local.set $tail (call $cat (local.get $p) (local.get $l) (local.get $line) (local.get $ll)
                                  (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
      (i32.store (i32.const 1080) (i32.sub (i32.load (i32.const 1080)) (i32.const 1)))
      (local.get $tail))

    ;; reply "ERR:" ++ the error in the import return area, or `okp/okl` when it succeeded
    (func $answer (param $d i32) (param $p i32) (param $l i32) (param $okp i32) (param $okl i32) (result i32)
      (local $buf i32) (local $el i32)
      (if (i32.load8_u (global.get $iret))
        (then
          (local.set $el (i32.load offset=8 (global.get $iret)))
          (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.add (local.get $el) (i32.const 4))))
          (memory.copy (local.get $buf) (i32.const 100) (i32.const 4))
          (memory.copy (i32.add (local.get $buf) (i32.const 4)) (i32.load offset=4 (global.get $iret)) (local.get $el))
          (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $buf)
                    (i32.add (local.get $el) (i32.const 4))))))
      (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $okp) (local.get $okl)))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (i32.const 140) (i32.const 32))
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $op i32) (local $i i32)
      (i32.store8 (i32.const 140) (i32.const 32))
      (if (i32.eqz (local.get $ml))
        (then (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $p)
                        (select (local.get $l) (i32.const 0) (local.get $d))))))
      (local.set $op (i32.load8_u (local.get $mp)))
      (if (i32.or (i32.eq (local.get $op) (i32.const 111)) (i32.eq (local.get $op) (i32.const 114)))  ;; 'o' 'r'
        (then
          (call $open (i32.add (local.get $mp) (i32.const 1)) (i32.sub (local.get $ml) (i32.const 1))
                (select (i32.const 64) (i32.const 72) (i32.eq (local.get $op) (i32.const 111)))
                (select (i32.const 5) (i32.const 2) (i32.eq (local.get $op) (i32.const 111)))
                (global.get $iret))
          (return (call $answer (local.get $d) (local.get $p) (local.get $l)
                    (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret))))))
      (if (i32.eq (local.get $op) (i32.const 115))  ;; 's' ID 0 MSG
        (then
          (local.set $i (i32.const 1))
          (block $found
            (loop $scan
              (br_if $found (i32.ge_u (local.get $i) (local.get $ml)))
              (br_if $found (i32.eqz (i32.load8_u (i32.add (local.get $mp) (local.get $i)))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $scan)))
          (call $csend (i32.add (local.get $mp) (i32.const 1)) (i32.sub (local.get $i) (i32.const 1))
                (i32.add (local.get $mp) (i32.add (local.get $i) (i32.const 1)))
                (i32.sub (local.get $ml) (select (i32.add (local.get $i) (i32.const 1)) (local.get $ml)
                                                 (i32.lt_u (local.get $i) (local.get $ml))))
                (global.get $iret))
          (return (call $answer (local.get $d) (local.get $p) (local.get $l) (i32.const 96) (i32.const 2)))))
      (if (i32.eq (local.get $op) (i32.const 99))  ;; 'c' ID
        (then
          (call $close (i32.add (local.get $mp) (i32.const 1)) (i32.sub (local.get $ml) (i32.const 1)) (global.get $iret))
          (return (call $answer (local.get $d) (local.get $p) (local.get $l) (i32.const 96) (i32.const 2)))))
      (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $p)
        (select (local.get $l) (i32.const 0) (local.get $d))))

    ;; handle-channel-open(state, (id, msg)) -> ok((state', (accept,)))
    ;; return area: +0 disc, +4 state disc, +8 ptr, +12 len, +16 accepted, +20 message disc, +24 ptr, +28 len
    (func (export "handle-channel-open") (param $d i32) (param $p i32) (param $l i32)
          (param $cp i32) (param $cl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $s i32) (local $refuse i32)
      (i32.store8 (i32.const 140) (i32.const 32))
      (local.set $refuse (i32.and (i32.eq (local.get $ml) (i32.const 2))
        (i32.and (i32.eq (i32.load8_u (local.get $mp)) (i32.const 110))
                 (i32.eq (i32.load8_u offset=1 (local.get $mp)) (i32.const 111)))))
      (local.set $s (call $log-line (local.get $d) (local.get $p) (local.get $l) (i32.const 112) (i32.const 5)
                      (local.get $cp) (local.get $cl) (local.get $mp) (local.get $ml)))
      (drop (call $ok (i32.const 1) (local.get $s) (i32.load (i32.const 1080))))
      (i32.store8 offset=16 (global.get $ret) (i32.eqz (local.get $refuse)))
      (i32.store8 offset=20 (global.get $ret) (local.get $refuse))
      (i32.store offset=24 (global.get $ret) (i32.const 80))
      (i32.store offset=28 (global.get $ret) (i32.const 9))
      (global.get $ret))

    (func (export "handle-channel-message") (param $d i32) (param $p i32) (param $l i32)
          (param $cp i32) (param $cl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $s i32)
      (i32.store8 (i32.const 140) (i32.const 32))
      (local.set $s (call $log-line (local.get $d) (local.get $p) (local.get $l) (i32.const 120) (i32.const 4)
                      (local.get $cp) (local.get $cl) (local.get $mp) (local.get $ml)))
      (call $ok (i32.const 1) (local.get $s) (i32.load (i32.const 1080))))

    (func (export "handle-channel-close") (param $d i32) (param $p i32) (param $l i32)
          (param $cp i32) (param $cl i32) (result i32)
      (local $s i32)
      (i32.store8 (i32.const 140) (i32.const 32))
      (local.set $s (call $log-line (local.get $d) (local.get $p) (local.get $l) (i32.const 128) (i32.const 6)
                      (local.get $cp) (local.get $cl) (i32.const 0) (i32.const 0)))
      (call $ok (i32.const 1) (local.get $s) (i32.load (i32.const 1080)))))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "msh" (instance
      (export "open" (func $open))
      (export "csend" (func $csend))
      (export "close" (func $close))))))

  (type $accept (record (field "accepted" bool) (field "message" (option (list u8)))))
  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $hsend (param "state" (option (list u8))) (param "params" (tuple (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-send") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $request (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8)) (tuple (option (list u8)))) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $chopen (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8)) (tuple $accept)) (error string)))
    (canon lift (core func $a "handle-channel-open") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $chmsg (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-channel-message") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $chclose (param "state" (option (list u8))) (param "params" (tuple string))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-channel-close") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $hsend))
    (export "handle-request" (func $request))
    (export "channel-accept" (type $accept))
    (export "handle-channel-open" (func $chopen))
    (export "handle-channel-message" (func $chmsg))
    (export "handle-channel-close" (func $chclose)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
