;; clock: reads WASI's monotonic clock, for the tests of host-served WASI clocks.
;;   handle-request "nap" -> asks the clock for a pollable (subscribe-duration 1 ms), which actors
;;                           are refused: the call ends as a crash
;;                  other -> replies the monotonic clock's now() as 8 bytes, little-endian
;;   handle-send    keeps state
;; Imports wasi:io/poll only for the pollable type monotonic-clock's signature names.
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
(component
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type (sub resource)))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (alias outer 1 $pollable (type $p))
    (export "pollable" (type $pe (eq $p)))
    (type $own (own $pe))
    (export "now" (func (result u64)))
    (export "subscribe-duration" (func (param "when" u64) (result $own)))))

  (core module $mem
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 65536)) (then unreachable))
      (global.set $next (i32.add (local.get $p) (local.get $size)))
      (if (local.get $old-size)
        (then (memory.copy (local.get $p) (local.get $old) (local.get $old-size))))
      (local.get $p))
    (func (export "reset") (param i32)
      (global.set $next (i32.const 8192))))
  (core instance $mem (instantiate $mem))
  (alias core export $mem "memory" (core memory $memory))

  (core func $now (canon lower (func $clock "now")))
  (core func $subscribe (canon lower (func $clock "subscribe-duration")))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "clock" "now" (func $now (result i64)))
    (import "clock" "subscribe-duration" (func $subscribe (param i64) (result i32)))
    (data (i32.const 64) "nap")
    (global $ret i32 (i32.const 1024))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (if (i32.and (i32.eq (local.get $ml) (i32.const 3))
                   (i32.eq (i32.load16_u (local.get $mp)) (i32.load16_u (i32.const 64))))
        (then (drop (call $subscribe (i64.const 1000000)))))
      (i64.store (i32.const 512) (call $now))
      (drop (call $ok (local.get $d) (local.get $p) (local.get $l)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (i32.const 512))
      (i32.store offset=24 (global.get $ret) (i32.const 8))
      (global.get $ret)))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "clock" (instance
      (export "now" (func $now))
      (export "subscribe-duration" (func $subscribe))))))

  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $send (param "state" (option (list u8))) (param "params" (tuple (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-send") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $request (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8)) (tuple (option (list u8)))) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $send))
    (export "handle-request" (func $request)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
