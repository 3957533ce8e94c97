;; httpecho: a theater:simple actor that serves HTTP (exports theater:simple/http-server), for the
;; http-server tests and bench/http.py. State: the number of requests served, a 4-byte little-endian
;; u32 (none counts as 0), so every call costs the same however long the actor has run.
;;   handle-request by path:
;;     "/crash"   traps (unreachable)            "/err"    returns err("asked to fail")
;;     "/status"  answers status 999 (invalid: the host turns it into 500)
;;     "/count"   200, the count (after this request) in decimal
;;     anything else: 200, content-type text/plain, body = METHOD " " PATH "?" QUERY "\n" ++ the body
;; Params (16 flat: exactly the canonical ABI's limit): state (d p l), incoming-request
;; (method, uri, path, query: ptr len each; headers ptr len; body d p l).
;; Return area at 1024: +0 disc; ok: state option +4 disc +8 ptr +12 len, http-response: status u16
;; +16, headers +20 ptr +24 len, body option +28 disc +32 ptr +36 len; err: +4 ptr +8 len.
;; Memory: bump allocator reset by every export's post-return (see echo.wat).
(component
  (import "theater:simple/http-types" (instance $types
    (type $response (record (field "status" u16) (field "headers" (list (tuple string string)))
                            (field "body" (option (list u8)))))
    (export "http-response" (type (eq $response)))))
  (alias export $types "http-response" (type $http-response))

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
    (data (i32.const 64) "/crash")          ;; 6
    (data (i32.const 72) "/err")            ;; 4
    (data (i32.const 80) "/status")         ;; 7
    (data (i32.const 88) "/count")          ;; 6
    (data (i32.const 96) "asked to fail")   ;; 13
    (data (i32.const 112) "content-type")   ;; 12
    (data (i32.const 128) "text/plain")     ;; 10
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

    ;; decimal digits of n at dst; returns the end
    (func $decimal (param $dst i32) (param $n i32) (result i32)
      (local $tmp i32) (local $len i32) (local $i i32)
      (local.set $tmp (local.get $n))
      (loop $count
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (local.set $tmp (i32.div_u (local.get $tmp) (i32.const 10)))
        (br_if $count (local.get $tmp)))
      (local.set $i (local.get $len))
      (loop $digits
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i))
                    (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
        (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
        (br_if $digits (local.get $i)))
      (i32.add (local.get $dst) (local.get $len)))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func (export "handle-request")
          (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (param $up i32) (param $ul i32)
          (param $pp i32) (param $pl i32) (param $qp i32) (param $ql i32)
          (param $hp i32) (param $hl i32) (param $bd i32) (param $bp i32) (param $bl i32) (result i32)
      (local $state i32) (local $sl i32) (local $body i32) (local $end i32) (local $hdr i32)
      (if (call $eq (local.get $pp) (local.get $pl) (i32.const 64) (i32.const 6)) (then unreachable))
      (if (call $eq (local.get $pp) (local.get $pl) (i32.const 72) (i32.const 4))
        (then
          (i32.store8 (global.get $ret) (i32.const 1))
          (i32.store offset=4 (global.get $ret) (i32.const 96))
          (i32.store offset=8 (global.get $ret) (i32.const 13))
          (return (global.get $ret))))
      ;; state' = count + 1 ($sl holds the new count)
      (if (i32.and (local.get $d) (i32.ge_u (local.get $l) (i32.const 4)))
        (then (local.set $sl (i32.load (local.get $p)))))
      (local.set $sl (i32.add (local.get $sl) (i32.const 1)))
      (local.set $state (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 4)))
      (i32.store (local.get $state) (local.get $sl))
      ;; one header: ("content-type", "text/plain")
      (local.set $hdr (call $alloc (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 16)))
      (i32.store (local.get $hdr) (i32.const 112))
      (i32.store offset=4 (local.get $hdr) (i32.const 12))
      (i32.store offset=8 (local.get $hdr) (i32.const 128))
      (i32.store offset=12 (local.get $hdr) (i32.const 10))
      ;; the body
      (if (i32.eqz (local.get $bd)) (then (local.set $bl (i32.const 0))))
      (local.set $body (call $alloc (i32.const 0) (i32.const 0) (i32.const 1)
        (i32.add (i32.add (i32.add (local.get $ml) (local.get $pl)) (i32.add (local.get $ql) (local.get $bl)))
                 (i32.const 16))))
      (if (call $eq (local.get $pp) (local.get $pl) (i32.const 88) (i32.const 6))
        (then (local.set $end (call $decimal (local.get $body) (local.get $sl))))
        (else
          (local.set $end (call $put (local.get $body) (local.get $mp) (local.get $ml)))
          (i32.store8 (local.get $end) (i32.const 32))
          (local.set $end (call $put (i32.add (local.get $end) (i32.const 1)) (local.get $pp) (local.get $pl)))
          (i32.store8 (local.get $end) (i32.const 63))
          (local.set $end (call $put (i32.add (local.get $end) (i32.const 1)) (local.get $qp) (local.get $ql)))
          (i32.store8 (local.get $end) (i32.const 10))
          (local.set $end (call $put (i32.add (local.get $end) (i32.const 1)) (local.get $bp) (local.get $bl)))))
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (i32.const 1))
      (i32.store offset=8 (global.get $ret) (local.get $state))
      (i32.store offset=12 (global.get $ret) (i32.const 4))
      (i32.store16 offset=16 (global.get $ret)
        (select (i32.const 999) (i32.const 200) (call $eq (local.get $pp) (local.get $pl) (i32.const 80) (i32.const 7))))
      (i32.store offset=20 (global.get $ret) (local.get $hdr))
      (i32.store offset=24 (global.get $ret) (i32.const 1))
      (i32.store8 offset=28 (global.get $ret) (i32.const 1))
      (i32.store offset=32 (global.get $ret) (local.get $body))
      (i32.store offset=36 (global.get $ret) (i32.sub (local.get $end) (local.get $body)))
      (global.get $ret)))
  (core instance $a (instantiate $actor (with "mem" (instance $mem))))

  (type $request (record (field "method" string) (field "uri" string) (field "path" string) (field "query" string)
                         (field "headers" (list (tuple string string))) (field "body" (option (list u8)))))
  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))
  (func $handle (param "state" (option (list u8))) (param "params" (tuple $request))
    (result (result (tuple (option (list u8)) (tuple $http-response)) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc (core func $mem "realloc"))
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $http-exports
    (export "incoming-request" (type $request))
    (export "http-response" (type $http-response))
    (export "handle-request" (func $handle)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/http-server" (instance $http-exports))
)
