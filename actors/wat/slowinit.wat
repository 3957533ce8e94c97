;; slowinit: echo (actors/wat/echo.wat) whose init first sleeps 800 ms through the timing handler,
;; so the actor stays "starting" long enough for a test to send to it meanwhile.
;;   init           timing.sleep(800) (its result ignored), keeps the given state
;;   handle-send    logs "echo got message", keeps state
;;   handle-request replies with the message bytes, keeps state
;;
;; Memory: a bump allocator whose pointer is reset by the post-return function of every
;; lifted export (the host has copied the results out by then), so the actor runs forever.
;; Layout: 0..1023 static strings, 1024.. export return area, 2048.. sleep's result, 8192.. heap.
(component
  (import "theater:simple/runtime" (instance $rt
    (export "log" (func (param "msg" string)))))
  (import "theater:simple/timing" (instance $timing
    (export "sleep" (func (param "duration-ms" u64) (result (result (error string)))))))

  (core module $mem
    (memory (export "memory") 2)
    (global $heap-base i32 (i32.const 8192))
    (global $next (mut i32) (i32.const 8192))
    ;; realloc(old-ptr, old-size, align, new-size) -> ptr; grows memory when needed
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
    ;; post-return of every export: takes the core result (the return-area pointer)
    (func (export "reset") (param i32)
      (global.set $next (global.get $heap-base))))
  (core instance $mem (instantiate $mem))
  (alias core export $mem "memory" (core memory $memory))

  (core func $log (canon lower (func $rt "log") (memory $memory)))
  ;; result<_, string> does not fit in one flat value: the host writes it at a return pointer
  (core func $sleep (canon lower (func $timing "sleep") (memory $memory) (realloc (core func $mem "realloc"))))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "rt" "log" (func $log (param i32 i32)))
    (import "timing" "sleep" (func $sleep (param i64 i32)))
    (data (i32.const 64) "echo got message")
    (global $ret i32 (i32.const 1024))

    ;; ok((state,)) for result<tuple<option<list<u8>>>, string>
    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (call $sleep (i64.const 800) (i32.const 2048))  ;; its result<_, string> lands at 2048, unread
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $log (i32.const 64) (i32.const 16))
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    ;; ok((state, (some(msg),)))
    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (drop (call $ok (local.get $d) (local.get $p) (local.get $l)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (local.get $mp))
      (i32.store offset=24 (global.get $ret) (local.get $ml))
      (global.get $ret)))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "rt" (instance (export "log" (func $log))))
    (with "timing" (instance (export "sleep" (func $sleep))))))

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
