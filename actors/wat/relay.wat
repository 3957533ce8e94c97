;; relay: forwards everything to the next actor.
;; State: the bytes of one address, NEXT.
;;   init           keeps state
;;   handle-send    logs "relay: forwarding message", send(NEXT, msg) (an error is logged), keeps state
;;   handle-request request(NEXT, msg) and replies with its reply; an err from the request
;;                  becomes the reply bytes (the err text), not a crash
;;
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
;; Layout: 0..1023 static strings, 1024.. export return area, 1088.. import return area, 8192.. heap.
(component
  (import "theater:simple/runtime" (instance $rt
    (export "log" (func (param "msg" string)))))
  (import "theater:simple/message-server-host" (instance $msh
    (export "send" (func (param "actor-id" string) (param "msg" (list u8))
      (result (result (error string)))))
    (export "request" (func (param "actor-id" string) (param "msg" (list u8))
      (result (result (list u8) (error string)))))))

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

  (core func $log (canon lower (func $rt "log") (memory $memory)))
  (core func $send (canon lower (func $msh "send") (memory $memory) (realloc (core func $mem "realloc"))))
  (core func $request (canon lower (func $msh "request") (memory $memory) (realloc (core func $mem "realloc"))))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    (import "rt" "log" (func $log (param i32 i32)))
    (import "msh" "send" (func $send (param i32 i32 i32 i32 i32)))
    (import "msh" "request" (func $request (param i32 i32 i32 i32 i32)))
    (data (i32.const 64) "relay: forwarding message")   ;; 25
    (data (i32.const 96) "relay: send failed: ")        ;; 20
    (global $ret i32 (i32.const 1024))
    (global $iret i32 (i32.const 1088))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func $log2 (param $pp i32) (param $pl i32) (param $tp i32) (param $tl i32)
      (local $buf i32)
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1)
                        (i32.add (local.get $pl) (local.get $tl))))
      (memory.copy (local.get $buf) (local.get $pp) (local.get $pl))
      (memory.copy (i32.add (local.get $buf) (local.get $pl)) (local.get $tp) (local.get $tl))
      (call $log (local.get $buf) (i32.add (local.get $pl) (local.get $tl))))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    ;; NEXT is the state bytes; with no state it is the empty address (the host refuses it)
    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $log (i32.const 64) (i32.const 25))
      (call $send (local.get $p) (select (local.get $l) (i32.const 0) (local.get $d))
                  (local.get $mp) (local.get $ml) (global.get $iret))
      (if (i32.load8_u (global.get $iret))
        (then (call $log2 (i32.const 96) (i32.const 20)
                (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret)))))
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    ;; ok or err, the payload sits at +4/+8 of the import return area: reply with it
    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (call $request (local.get $p) (select (local.get $l) (i32.const 0) (local.get $d))
                     (local.get $mp) (local.get $ml) (global.get $iret))
      (drop (call $ok (local.get $d) (local.get $p) (local.get $l)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (i32.load offset=4 (global.get $iret)))
      (i32.store offset=24 (global.get $ret) (i32.load offset=8 (global.get $iret)))
      (global.get $ret)))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "rt" (instance (export "log" (func $log))))
    (with "msh" (instance
      (export "send" (func $send))
      (export "request" (func $request))))))

  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $handle-send (param "state" (option (list u8))) (param "params" (tuple (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-send") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $handle-request (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8)) (tuple (option (list u8)))) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $handle-send))
    (export "handle-request" (func $handle-request)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
