;; crasher: a theater:simple actor that fails on command, for supervision tests.
;;   init           keeps state; state exactly "fail" -> err("init refused: state is fail")
;;   handle-send    "err"  -> err("asked to fail")
;;                  "trap" -> traps (unreachable)
;;                  "exit" -> calls runtime.shutdown(none), then ok(state)
;;                  "loop" -> loops forever (the host's epoch deadline interrupts it)
;;                  other  -> ok(state)
;;   handle-request the same commands ("exit" replies with the message); other -> echoes the message
;;
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
;; Layout: 0..1023 static strings, 1024.. export return area, 1088.. import return area, 8192.. heap.
(component
  (import "theater:simple/runtime" (instance $rt
    (export "log" (func (param "msg" string)))
    (export "shutdown" (func (param "data" (option (list u8))) (result (result (error string)))))))

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
  (core func $shutdown (canon lower (func $rt "shutdown") (memory $memory) (realloc (core func $mem "realloc"))))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    (import "rt" "log" (func $log (param i32 i32)))
    ;; shutdown(option disc, ptr, len, return-area): result<_, string> at return-area
    (import "rt" "shutdown" (func $shutdown (param i32 i32 i32 i32)))
    (data (i32.const 64) "fail")
    (data (i32.const 80) "init refused: state is fail")     ;; 27
    (data (i32.const 128) "asked to fail")                  ;; 13
    (data (i32.const 144) "err")
    (data (i32.const 148) "trap")
    (data (i32.const 152) "exit")
    (data (i32.const 156) "loop")
    (data (i32.const 176) "crasher: shutdown failed: ")     ;; 26
    (data (i32.const 208) "crasher: exiting")               ;; 16
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

    (func $err (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 1))
      (i32.store offset=4 (global.get $ret) (local.get $p))
      (i32.store offset=8 (global.get $ret) (local.get $l))
      (global.get $ret))

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

    ;; log prefix ++ text
    (func $log2 (param $pp i32) (param $pl i32) (param $tp i32) (param $tl i32)
      (local $buf i32)
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1)
                        (i32.add (local.get $pl) (local.get $tl))))
      (memory.copy (local.get $buf) (local.get $pp) (local.get $pl))
      (memory.copy (i32.add (local.get $buf) (local.get $pl)) (local.get $tp) (local.get $tl))
      (call $log (local.get $buf) (i32.add (local.get $pl) (local.get $tl))))

    ;; command code of a message: 1 err, 2 trap, 3 exit, 4 loop, 0 anything else
    (func $command (param $p i32) (param $l i32) (result i32)
      (if (call $eq (local.get $p) (local.get $l) (i32.const 144) (i32.const 3)) (then (return (i32.const 1))))
      (if (call $eq (local.get $p) (local.get $l) (i32.const 148) (i32.const 4)) (then (return (i32.const 2))))
      (if (call $eq (local.get $p) (local.get $l) (i32.const 152) (i32.const 4)) (then (return (i32.const 3))))
      (if (call $eq (local.get $p) (local.get $l) (i32.const 156) (i32.const 4)) (then (return (i32.const 4))))
      (i32.const 0))

    ;; carry out a command that does not return a value; returns the code
    (func $run (param $p i32) (param $l i32) (result i32)
      (local $c i32)
      (local.set $c (call $command (local.get $p) (local.get $l)))
      (if (i32.eq (local.get $c) (i32.const 2)) (then unreachable))
      (if (i32.eq (local.get $c) (i32.const 3))
        (then
          (call $log (i32.const 208) (i32.const 16))
          (call $shutdown (i32.const 0) (i32.const 0) (i32.const 0) (global.get $iret))
          (if (i32.load8_u (global.get $iret))
            (then (call $log2 (i32.const 176) (i32.const 26)
                    (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret)))))))
      (if (i32.eq (local.get $c) (i32.const 4))
        (then (loop $forever (br $forever))))
      (local.get $c))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (if (i32.and (local.get $d) (call $eq (local.get $p) (local.get $l) (i32.const 64) (i32.const 4)))
        (then (return (call $err (i32.const 80) (i32.const 27)))))
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (if (i32.eq (call $run (local.get $mp) (local.get $ml)) (i32.const 1))
        (then (return (call $err (i32.const 128) (i32.const 13)))))
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (if (i32.eq (call $run (local.get $mp) (local.get $ml)) (i32.const 1))
        (then (return (call $err (i32.const 128) (i32.const 13)))))
      (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $mp) (local.get $ml))))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "rt" (instance
      (export "log" (func $log))
      (export "shutdown" (func $shutdown))))))

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
