;; wsecho: a theater:simple actor that serves WebSocket (exports theater:simple/websocket-server),
;; for the websocket-server tests. State: the number of handle-message calls that succeeded, a
;; 4-byte little-endian u32 (none counts as 0); every successful call returns count + 1.
;;   handle-message(state, (connection-id, message)) by message:
;;     connect        one text message "welcome " ++ connection-id in decimal
;;     text "crash"   traps (unreachable)          text "err"    returns err("asked to fail")
;;     text "bye"     one close message (data and text none)
;;     text "count"   one text message: the count (after this message) in decimal
;;     text T         one text message "echo: " ++ T (a text message whose text is none echoes "")
;;     binary         one binary message with the same data option (the same bytes D)
;;     ping           one pong message with the same data option
;;     close, pong, other(_): no messages
;; Params (13 flat): state (d p l), connection-id i64, websocket-message: ty (disc, other's string
;; ptr len), data option (d p l), text option (d p l).
;; Return area at 1024: +0 disc; ok: state option +4 disc +8 ptr +12 len, websocket-response:
;; messages +16 ptr +20 len; err: +4 ptr +8 len.
;; websocket-message in memory (size 36, align 4): ty +0 disc (0 text 1 binary 2 connect 3 close
;; 4 ping 5 pong 6 other) +4 ptr +8 len; data option +12 disc +16 ptr +20 len; text option +24 disc
;; +28 ptr +32 len.
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
(component
  (import "theater:simple/websocket-types" (instance $types
    (type $mt (variant (case "text") (case "binary") (case "connect") (case "close")
                       (case "ping") (case "pong") (case "other" string)))
    (export "message-type" (type $message-type (eq $mt)))
    (type $msg (record (field "ty" $message-type) (field "data" (option (list u8)))
                       (field "text" (option string))))
    (export "websocket-message" (type $websocket-message (eq $msg)))
    (type $resp (record (field "messages" (list $websocket-message))))
    (export "websocket-response" (type (eq $resp)))))
  (alias export $types "websocket-message" (type $websocket-message))
  (alias export $types "websocket-response" (type $websocket-response))

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

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    (data (i32.const 64) "crash")           ;; 5
    (data (i32.const 72) "err")             ;; 3
    (data (i32.const 80) "bye")             ;; 3
    (data (i32.const 88) "count")           ;; 5
    (data (i32.const 96) "asked to fail")   ;; 13
    (data (i32.const 112) "welcome ")       ;; 8
    (data (i32.const 128) "echo: ")         ;; 6
    (global $ret i32 (i32.const 1024))

    (func $eq (param $p i32) (param $l i32) (param $q i32) (param $m i32) (result i32)
      (local $i i32)
      (if (i32.ne (local.get $l) (local.get $m)) (then (return (i32.const 0))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $l)))
          (if (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                      (i32.load8_u (i32.add (local.get $q) (local.get $i))))
            (then (return (i32.const 0))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (i32.const 1))

    ;; copy (p, l) to `dst`; returns dst + l
    (func $put (param $dst i32) (param $p i32) (param $l i32) (result i32)
      (memory.copy (local.get $dst) (local.get $p) (local.get $l))
      (i32.add (local.get $dst) (local.get $l)))

    ;; decimal digits of the unsigned 64-bit n at dst (at most 20); returns the end
    (func $decimal (param $dst i32) (param $n i64) (result i32)
      (local $tmp i64) (local $len i32) (local $i i32)
      (local.set $tmp (local.get $n))
      (loop $count
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (local.set $tmp (i64.div_u (local.get $tmp) (i64.const 10)))
        (br_if $count (i64.ne (local.get $tmp) (i64.const 0))))
      (local.set $i (local.get $len))
      (loop $digits
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i))
                    (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10)))))
        (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
        (br_if $digits (local.get $i)))
      (i32.add (local.get $dst) (local.get $len)))

    ;; the message at m := text message (p, l): ty text, data none, text some
    (func $text-msg (param $m i32) (param $p i32) (param $l i32)
      (i32.store8 (local.get $m) (i32.const 0))
      (i32.store8 offset=12 (local.get $m) (i32.const 0))
      (i32.store8 offset=24 (local.get $m) (i32.const 1))
      (i32.store offset=28 (local.get $m) (local.get $p))
      (i32.store offset=32 (local.get $m) (local.get $l)))

    ;; the message at m := type ty with data option (d, p, l), text none
    (func $data-msg (param $m i32) (param $ty i32) (param $d i32) (param $p i32) (param $l i32)
      (i32.store8 (local.get $m) (local.get $ty))
      (i32.store8 offset=12 (local.get $m) (local.get $d))
      (i32.store offset=16 (local.get $m) (local.get $p))
      (i32.store offset=20 (local.get $m) (local.get $l))
      (i32.store8 offset=24 (local.get $m) (i32.const 0)))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func (export "handle-message")
          (param $d i32) (param $p i32) (param $l i32) (param $id i64)
          (param $tk i32) (param $op i32) (param $ol i32)
          (param $dd i32) (param $dp i32) (param $dl i32)
          (param $td i32) (param $tp i32) (param $tl i32) (result i32)
      (local $n i32) (local $state i32) (local $msg i32) (local $count i32) (local $buf i32) (local $end i32)
      ;; a text message without text is the empty text
      (if (i32.eqz (local.get $td)) (then (local.set $tl (i32.const 0))))
      (if (i32.eqz (local.get $tk))
        (then
          (if (call $eq (local.get $tp) (local.get $tl) (i32.const 64) (i32.const 5)) (then unreachable))
          (if (call $eq (local.get $tp) (local.get $tl) (i32.const 72) (i32.const 3))
            (then
              (i32.store8 (global.get $ret) (i32.const 1))
              (i32.store offset=4 (global.get $ret) (i32.const 96))
              (i32.store offset=8 (global.get $ret) (i32.const 13))
              (return (global.get $ret))))))
      ;; state' = count + 1 ($n holds the new count)
      (if (i32.and (local.get $d) (i32.ge_u (local.get $l) (i32.const 4)))
        (then (local.set $n (i32.load (local.get $p)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (local.set $state (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 4)))
      (i32.store (local.get $state) (local.get $n))
      ;; room for the one response message; $count says whether it is sent
      (local.set $msg (call $alloc (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 36)))
      (local.set $count (i32.const 1))
      (block $respond
        (block $none
          (block $ping
            (block $connect
              (block $binary
                (block $text
                  (br_table $text $binary $connect $none $ping $none $none $none (local.get $tk)))
                ;; text: bye, count or echo
                (if (call $eq (local.get $tp) (local.get $tl) (i32.const 80) (i32.const 3))
                  (then
                    (call $data-msg (local.get $msg) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0))
                    (br $respond)))
                (if (call $eq (local.get $tp) (local.get $tl) (i32.const 88) (i32.const 5))
                  (then
                    (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 20)))
                    (local.set $end (call $decimal (local.get $buf) (i64.extend_i32_u (local.get $n))))
                    (call $text-msg (local.get $msg) (local.get $buf) (i32.sub (local.get $end) (local.get $buf)))
                    (br $respond)))
                (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1)
                  (i32.add (local.get $tl) (i32.const 6))))
                (local.set $end (call $put (local.get $buf) (i32.const 128) (i32.const 6)))
                (local.set $end (call $put (local.get $end) (local.get $tp) (local.get $tl)))
                (call $text-msg (local.get $msg) (local.get $buf) (i32.sub (local.get $end) (local.get $buf)))
                (br $respond))
              ;; binary: the same data
              (call $data-msg (local.get $msg) (i32.const 1) (local.get $dd) (local.get $dp) (local.get $dl))
              (br $respond))
            ;; connect: "welcome " ++ id
            (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 28)))
            (local.set $end (call $put (local.get $buf) (i32.const 112) (i32.const 8)))
            (local.set $end (call $decimal (local.get $end) (local.get $id)))
            (call $text-msg (local.get $msg) (local.get $buf) (i32.sub (local.get $end) (local.get $buf)))
            (br $respond))
          ;; ping: pong with the same data
          (call $data-msg (local.get $msg) (i32.const 5) (local.get $dd) (local.get $dp) (local.get $dl))
          (br $respond))
        ;; close, pong, other: nothing to send
        (local.set $count (i32.const 0)))
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (i32.const 1))
      (i32.store offset=8 (global.get $ret) (local.get $state))
      (i32.store offset=12 (global.get $ret) (i32.const 4))
      (i32.store offset=16 (global.get $ret) (local.get $msg))
      (i32.store offset=20 (global.get $ret) (local.get $count))
      (global.get $ret)))
  (core instance $a (instantiate $actor (with "mem" (instance $mem))))

  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $handle (param "state" (option (list u8))) (param "params" (tuple u64 $websocket-message))
    (result (result (tuple (option (list u8)) (tuple $websocket-response)) (error string)))
    (canon lift (core func $a "handle-message") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $ws-exports
    (export "websocket-message" (type $websocket-message))
    (export "websocket-response" (type $websocket-response))
    (export "handle-message" (func $handle)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/websocket-server" (instance $ws-exports))
)
