;; rtseed: imports the seed's spelling of the runtime interface, ntwk:theater/runtime, whose
;; `log` takes a level: log(level, message) -> result<_, string>. For tests/test_env_random_runtime.py.
;;   handle-request  L u32le N LEVEL(N bytes) MSG -> log   ("+" / "!err")
;;                   n                            -> get-actor-name (the text)
;;                   other                        -> "?"
;; Memory: bump allocator reset by every export's post-return (see rtprobe.wat).
(component
  (import "ntwk:theater/runtime" (instance $rt
    (export "log" (func (param "level" string) (param "message" string) (result (result (error string)))))
    (export "get-actor-name" (func (result string)))))

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
  (alias core export $mem "realloc" (core func $realloc))

  (core func $log (canon lower (func $rt "log") (memory $memory) (realloc $realloc)))
  (core func $get-actor-name (canon lower (func $rt "get-actor-name") (memory $memory) (realloc $realloc)))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "host" "log" (func $log (param i32 i32 i32 i32 i32)))
    (import "host" "get-actor-name" (func $get-actor-name (param i32)))
    (data (i32.const 600) "+!?")
    (global $ret i32 (i32.const 1024))
    (global $r i32 (i32.const 256))

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

    ;; the reply (ptr, len) into the return area
    (func $reply (param $p i32) (param $n i32)
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (local.get $p))
      (i32.store offset=24 (global.get $ret) (local.get $n)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $op i32) (local $a i32) (local $k i32) (local $e i32)
      (drop (call $ok (local.get $d) (local.get $p) (local.get $l)))
      (call $reply (i32.const 602) (i32.const 1))   ;; "?" unless an op below answers
      (if (local.get $ml) (then (local.set $op (i32.load8_u (local.get $mp)))))
      (local.set $a (i32.add (local.get $mp) (i32.const 1)))
      (if (i32.eq (local.get $op) (i32.const 110)) ;; n
        (then (call $get-actor-name (global.get $r))
              (call $reply (i32.load (global.get $r)) (i32.load offset=4 (global.get $r)))))
      (if (i32.eq (local.get $op) (i32.const 76)) ;; L
        (then
          (local.set $k (i32.load (local.get $a)))
          (call $log (i32.add (local.get $a) (i32.const 4)) (local.get $k)
                     (i32.add (i32.add (local.get $a) (i32.const 4)) (local.get $k))
                     (i32.sub (i32.sub (local.get $ml) (i32.const 5)) (local.get $k))
                     (global.get $r))
          (if (i32.load8_u (global.get $r))
            ;; err: "!" then the message; the message (ptr at +4) was just allocated: put "!" in front
            ;; by copying it one byte further into a fresh spot after 4096
            (then
              (local.set $e (i32.load offset=8 (global.get $r)))
              (i32.store8 (i32.const 4096) (i32.const 33))
              (memory.copy (i32.const 4097) (i32.load offset=4 (global.get $r)) (local.get $e))
              (call $reply (i32.const 4096) (i32.add (local.get $e) (i32.const 1))))
            (else (call $reply (i32.const 600) (i32.const 1))))))
      (global.get $ret)))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "host" (instance
      (export "log" (func $log))
      (export "get-actor-name" (func $get-actor-name))))))

  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))
  (func $send (param "state" (option (list u8))) (param "params" (tuple (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-send") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))
  (func $request (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8)) (tuple (option (list u8)))) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $send))
    (export "handle-request" (func $request)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
