;; hostile: an actor that attacks the host's limits on command, for the limits tests.
;; State: the address it sends to (usually its own name), kept unchanged.
;;   handle-send    first byte 'L' -> calls runtime.log in an endless loop (a log flood that keeps
;;                                    calling the host); anything else -> ok, nothing done (a sink)
;;   handle-request first byte 'L' -> the same endless log loop
;;                  'S' u32le N    -> sends "z" to the state's address N times; replies 8 bytes:
;;                                    u32le sends that returned ok, u32le sends that returned err
;;                  'B' u32le N    -> sends one message of N bytes to the state's address; replies
;;                                    "ok" or the error the host returned
;;                  'E' u32le N    -> replies "E" followed by the error of the last of N sends to the
;;                                    address (or "E" alone when none failed)
;;                  anything else  -> replies with the message
;;
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
;; Layout: 0..1023 static strings, 1024.. export return area, 1088.. import return area,
;; 1100..1108 send counters, 8192.. heap.
(component
  (import "theater:simple/runtime" (instance $rt
    (export "log" (func (param "msg" string)))))
  (import "theater:simple/message-server-host" (instance $msh
    (export "send" (func (param "actor-id" string) (param "msg" (list u8)) (result (result (error string)))))))

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

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    (import "rt" "log" (func $log (param i32 i32)))
    ;; send(target ptr, len, msg ptr, len, return-area): result<_, string> at return-area
    (import "msh" "send" (func $send (param i32 i32 i32 i32 i32)))
    (data (i32.const 64) "hostile: flooding the log with this line")  ;; 40
    (data (i32.const 128) "z")
    (data (i32.const 132) "ok")
    (data (i32.const 136) "E")
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

    (func $flood
      (loop $forever
        (call $log (i32.const 64) (i32.const 40))
        (br $forever)))

    ;; send `len` bytes at `p` to the address (tp, tl) `n` times; counters at 1100 (ok) and 1104 (err);
    ;; the last error stays in the import return area
    (func $sends (param $tp i32) (param $tl i32) (param $p i32) (param $len i32) (param $n i32)
      (local $i i32)
      (i32.store (i32.const 1100) (i32.const 0))
      (i32.store (i32.const 1104) (i32.const 0))
      (i32.store8 (i32.const 1112) (i32.const 0))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (call $send (local.get $tp) (local.get $tl) (local.get $p) (local.get $len) (global.get $iret))
          (if (i32.load8_u (global.get $iret))
            (then
              (i32.store (i32.const 1104) (i32.add (i32.load (i32.const 1104)) (i32.const 1)))
              (i32.store8 (i32.const 1112) (i32.const 1))
              (i32.store (i32.const 1116) (i32.load offset=4 (global.get $iret)))
              (i32.store (i32.const 1120) (i32.load offset=8 (global.get $iret))))
            (else
              (i32.store (i32.const 1100) (i32.add (i32.load (i32.const 1100)) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next))))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (if (i32.and (i32.gt_u (local.get $ml) (i32.const 0))
                   (i32.eq (i32.load8_u (local.get $mp)) (i32.const 76)))  ;; 'L'
        (then (call $flood)))
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $op i32) (local $n i32) (local $buf i32) (local $out i32) (local $el i32)
      (if (i32.eqz (local.get $ml))
        (then (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $mp) (i32.const 0)))))
      (local.set $op (i32.load8_u (local.get $mp)))
      (if (i32.ge_u (local.get $ml) (i32.const 5))
        (then (local.set $n (i32.load offset=1 align=1 (local.get $mp)))))
      (if (i32.eq (local.get $op) (i32.const 76))  ;; 'L'
        (then (call $flood)))
      (if (i32.eq (local.get $op) (i32.const 83))  ;; 'S'
        (then
          (call $sends (local.get $p) (local.get $l) (i32.const 128) (i32.const 1) (local.get $n))
          (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (i32.const 1100) (i32.const 8)))))
      (if (i32.eq (local.get $op) (i32.const 66))  ;; 'B'
        (then
          (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $n)))
          (memory.fill (local.get $buf) (i32.const 98) (local.get $n))
          (call $sends (local.get $p) (local.get $l) (local.get $buf) (local.get $n) (i32.const 1))
          (if (i32.load8_u (i32.const 1112))
            (then (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l)
                            (i32.load (i32.const 1116)) (i32.load (i32.const 1120))))))
          (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (i32.const 132) (i32.const 2)))))
      (if (i32.eq (local.get $op) (i32.const 69))  ;; 'E'
        (then
          (call $sends (local.get $p) (local.get $l) (i32.const 128) (i32.const 1) (local.get $n))
          (if (i32.eqz (i32.load8_u (i32.const 1112)))
            (then (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (i32.const 136) (i32.const 1)))))
          (local.set $el (i32.load (i32.const 1120)))
          (local.set $out (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.add (local.get $el) (i32.const 1))))
          (i32.store8 (local.get $out) (i32.const 69))
          (memory.copy (i32.add (local.get $out) (i32.const 1)) (i32.load (i32.const 1116)) (local.get $el))
          (return (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $out)
                    (i32.add (local.get $el) (i32.const 1))))))
      (call $ok-reply (local.get $d) (local.get $p) (local.get $l) (local.get $mp) (local.get $ml))))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "rt" (instance (export "log" (func $log))))
    (with "msh" (instance (export "send" (func $send))))))

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

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $hsend))
    (export "handle-request" (func $request)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
