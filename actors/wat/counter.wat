;; counter: a theater:simple actor whose state is an ASCII decimal u64 (e.g. "42").
;;   init           none or empty -> "0"; a valid number -> kept as is;
;;                  exactly "fail" -> err("init refused: state is fail");
;;                  anything else  -> err("init refused: state is not a decimal number")
;;   handle-send    count += 1
;;   handle-request "get" -> reply the count, state unchanged;
;;                  anything else -> count += 1, reply the new count
;; Counts wrap at 2^64 (u64 arithmetic); numbers above u64 max are not valid.
;;
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
;; Layout: 0..1023 static strings, 1024.. export return area, 8192.. heap.
(component
  (import "theater:simple/runtime" (instance $rt
    (export "log" (func (param "msg" string)))))

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

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    (import "rt" "log" (func $log (param i32 i32)))
    (data (i32.const 64) "fail")
    (data (i32.const 80) "init refused: state is fail")                   ;; 27
    (data (i32.const 128) "init refused: state is not a decimal number")  ;; 43
    (data (i32.const 192) "counter: state is not a decimal number")       ;; 38
    (data (i32.const 256) "get")
    (data (i32.const 264) "0")
    (global $ret i32 (i32.const 1024))
    ;; set by $parse: 1 when the bytes are not a decimal u64
    (global $bad (mut i32) (i32.const 0))
    ;; set by $itoa: length of the digits it wrote
    (global $len (mut i32) (i32.const 0))

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

    ;; byte-equality of [p, p+l) and [q, q+m)
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

    ;; option<list<u8>> (d, p, l) -> u64; none or empty is 0; sets $bad on non-digits or overflow
    (func $parse (param $d i32) (param $p i32) (param $l i32) (result i64)
      (local $i i32) (local $c i64) (local $v i64)
      (global.set $bad (i32.const 0))
      (if (i32.eqz (local.get $d)) (then (return (i64.const 0))))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $l)))
          (local.set $c (i64.sub (i64.load8_u (i32.add (local.get $p) (local.get $i))) (i64.const 48)))
          (if (i64.gt_u (local.get $c) (i64.const 9))
            (then (global.set $bad (i32.const 1)) (return (i64.const 0))))
          ;; overflow when v > (u64max - c) / 10
          (if (i64.gt_u (local.get $v)
                (i64.div_u (i64.sub (i64.const -1) (local.get $c)) (i64.const 10)))
            (then (global.set $bad (i32.const 1)) (return (i64.const 0))))
          (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10)) (local.get $c)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (local.get $v))

    ;; u64 -> pointer to its decimal digits in fresh heap memory; length in $len
    (func $itoa (param $v i64) (result i32)
      (local $buf i32) (local $i i32)
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 20)))
      (local.set $i (i32.const 20))
      (loop $digit
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (i64.store8 (i32.add (local.get $buf) (local.get $i))
          (i64.add (i64.rem_u (local.get $v) (i64.const 10)) (i64.const 48)))
        (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
        (br_if $digit (i64.ne (local.get $v) (i64.const 0))))
      (global.set $len (i32.sub (i32.const 20) (local.get $i)))
      (i32.add (local.get $buf) (local.get $i)))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (if (i32.and (local.get $d) (call $eq (local.get $p) (local.get $l) (i32.const 64) (i32.const 4)))
        (then (return (call $err (i32.const 80) (i32.const 27)))))
      (drop (call $parse (local.get $d) (local.get $p) (local.get $l)))
      (if (global.get $bad)
        (then (return (call $err (i32.const 128) (i32.const 43)))))
      (if (i32.or (i32.eqz (local.get $d)) (i32.eqz (local.get $l)))
        (then (return (call $ok (i32.const 1) (i32.const 264) (i32.const 1)))))
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (local $v i64) (local $s i32)
      (local.set $v (call $parse (local.get $d) (local.get $p) (local.get $l)))
      (if (global.get $bad) (then (return (call $err (i32.const 192) (i32.const 38)))))
      (local.set $s (call $itoa (i64.add (local.get $v) (i64.const 1))))
      (call $ok (i32.const 1) (local.get $s) (global.get $len)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $v i64) (local $s i32)
      (local.set $v (call $parse (local.get $d) (local.get $p) (local.get $l)))
      (if (global.get $bad) (then (return (call $err (i32.const 192) (i32.const 38)))))
      (if (call $eq (local.get $mp) (local.get $ml) (i32.const 256) (i32.const 3))
        (then
          (local.set $s (call $itoa (local.get $v)))
          (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l)
                                  (local.get $s) (global.get $len)))))
      (local.set $s (call $itoa (i64.add (local.get $v) (i64.const 1))))
      (call $ok-reply (i32.const 1) (local.get $s) (global.get $len)
                      (local.get $s) (global.get $len))))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "rt" (instance (export "log" (func $log))))))

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
