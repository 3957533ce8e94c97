;; httpprobe: calls theater:simple/http-client.send-http, for the http-client handler's tests.
;;   handle-request: the message is
;;       "METHOD URL[ NAME:VALUE]..." [ "\n" BODY ]
;;     the first line's space-separated words are the method, the URL and request headers (each split
;;     at its first ':'; a value holds no space); everything after the first "\n" is the body (a
;;     message without "\n" sends no body: none).
;;     A leading '+' (e.g. "+GET URL") asks for the response's headers too; a leading '#' for the
;;     body's size instead of the body (a reply that does not carry the body into the chain).
;;   replies:
;;     ok, body some(b):  "STATUS\n" + b          ('+': "STATUS\n" + "name: value\n"... + "\n" + b)
;;     ok, body none:     "STATUS"                ('+': "STATUS\n" + "name: value\n"... + "\n")
;;     '#':               "STATUS\n" + the body's size in decimal ("STATUS" when none)
;;     err(e):            "ERR:" + e
;;   init and handle-send keep the state.
;; Canonical ABI: http-request flattens to 9 i32 (method ptr/len, uri ptr/len, headers ptr/len, body
;; option disc/ptr/len), so send-http's core signature is those 9 plus the pointer where the host
;; writes result<http-response, string>: +0 u8 discriminant; ok: +4 u16 status, +8/+12 headers
;; ptr/len (16-byte elements: name ptr, name len, value ptr, value len), +16 u8 body option
;; discriminant, +20/+24 body ptr/len; err: +4/+8 string ptr/len.
;; Memory: a bump allocator (growing the memory as needed) reset by every export's post-return;
;; the host call's result lands at 512, the export's return area is at 1024.
(component
  (import "theater:simple/http-client" (instance $http
    (type $req (record
      (field "method" string) (field "uri" string)
      (field "headers" (list (tuple string string))) (field "body" (option (list u8)))))
    (export "http-request" (type $req-e (eq $req)))
    (type $resp (record
      (field "status" u16) (field "headers" (list (tuple string string))) (field "body" (option (list u8)))))
    (export "http-response" (type $resp-e (eq $resp)))
    (export "send-http" (func (param "req" $req-e) (result (result $resp-e (error string)))))))

  (core module $mem
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (if (i32.lt_u (local.get $end) (local.get $p)) (then unreachable))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                                        (i32.const 65535))
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
      (global.set $next (i32.const 8192))))
  (core instance $mem (instantiate $mem))
  (alias core export $mem "memory" (core memory $memory))
  (alias core export $mem "realloc" (core func $realloc))

  (core func $send-http (canon lower (func $http "send-http") (memory $memory) (realloc $realloc)))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "http" "send-http" (func $send-http (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)))
    (data (i32.const 96) "ERR:")
    (data (i32.const 128) "ERR:empty request")
    ;; where the host call writes its result
    (global $res i32 (i32.const 512))
    ;; the export's return area
    (global $ret i32 (i32.const 1024))
    ;; the state of the current call, handed back unchanged
    (global $sd (mut i32) (i32.const 0))
    (global $sp (mut i32) (i32.const 0))
    (global $sl (mut i32) (i32.const 0))

    (func $alloc (param $size i32) (result i32)
      (call $realloc (i32.const 0) (i32.const 0) (i32.const 4) (local.get $size)))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    ;; ok((state, (some(bytes at ptr, len),)))
    (func $reply (param $ptr i32) (param $len i32) (result i32)
      (drop (call $ok (global.get $sd) (global.get $sp) (global.get $sl)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (local.get $ptr))
      (i32.store offset=24 (global.get $ret) (local.get $len))
      (global.get $ret))

    ;; "ERR:" + the host's error string (ptr at $res + 4, len at $res + 8)
    (func $err (result i32)
      (local $ep i32) (local $el i32) (local $out i32)
      (local.set $ep (i32.load offset=4 (global.get $res)))
      (local.set $el (i32.load offset=8 (global.get $res)))
      (local.set $out (call $alloc (i32.add (local.get $el) (i32.const 4))))
      (memory.copy (local.get $out) (i32.const 96) (i32.const 4))
      (memory.copy (i32.add (local.get $out) (i32.const 4)) (local.get $ep) (local.get $el))
      (call $reply (local.get $out) (i32.add (local.get $el) (i32.const 4))))

    ;; decimal digits of v at dst; returns how many
    (func $utoa (param $v i32) (param $dst i32) (result i32)
      (local $n i32) (local $t i32) (local $i i32)
      (local.set $n (i32.const 1))
      (local.set $t (local.get $v))
      (block $done
        (loop $count
          (br_if $done (i32.lt_u (local.get $t) (i32.const 10)))
          (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $count)))
      (local.set $i (local.get $n))
      (loop $digit
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i))
                    (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
        (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
        (br_if $digit (i32.gt_s (local.get $i) (i32.const 0))))
      (local.get $n))

    ;; the first index in [from, end) holding byte b, or end
    (func $find (param $from i32) (param $end i32) (param $b i32) (result i32)
      (block $found
        (loop $scan
          (br_if $found (i32.ge_u (local.get $from) (local.get $end)))
          (br_if $found (i32.eq (i32.load8_u (local.get $from)) (local.get $b)))
          (local.set $from (i32.add (local.get $from) (i32.const 1)))
          (br $scan)))
      (local.get $from))

    ;; the reply to a successful call; $dump: the headers too; $sized: the body's size, not the body
    (func $answer (param $dump i32) (param $sized i32) (result i32)
      (local $hp i32) (local $hn i32) (local $bd i32) (local $bp i32) (local $bl i32)
      (local $total i32) (local $i i32) (local $e i32) (local $out i32) (local $o i32)
      (local.set $hp (i32.load offset=8 (global.get $res)))
      (local.set $hn (i32.load offset=12 (global.get $res)))
      (local.set $bd (i32.load8_u offset=16 (global.get $res)))
      (local.set $bp (i32.load offset=20 (global.get $res)))
      (local.set $bl (select (i32.load offset=24 (global.get $res)) (i32.const 0) (local.get $bd)))
      ;; status (at most 5 digits) + "\n" + headers ("name: value\n" each) + "\n" + body
      (local.set $total (i32.add (i32.const 8) (local.get $bl)))
      (if (local.get $dump)
        (then
          (local.set $i (i32.const 0))
          (block $sized
            (loop $size
              (br_if $sized (i32.ge_u (local.get $i) (local.get $hn)))
              (local.set $e (i32.add (local.get $hp) (i32.shl (local.get $i) (i32.const 4))))
              (local.set $total (i32.add (local.get $total)
                (i32.add (i32.add (i32.load offset=4 (local.get $e)) (i32.load offset=12 (local.get $e)))
                         (i32.const 3))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $size)))))
      (local.set $out (call $alloc (local.get $total)))
      (local.set $o (i32.add (local.get $out)
        (call $utoa (i32.load16_u offset=4 (global.get $res)) (local.get $out))))
      (if (local.get $dump)
        (then
          (i32.store8 (local.get $o) (i32.const 10))
          (local.set $o (i32.add (local.get $o) (i32.const 1)))
          (local.set $i (i32.const 0))
          (block $written
            (loop $write
              (br_if $written (i32.ge_u (local.get $i) (local.get $hn)))
              (local.set $e (i32.add (local.get $hp) (i32.shl (local.get $i) (i32.const 4))))
              (memory.copy (local.get $o) (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)))
              (local.set $o (i32.add (local.get $o) (i32.load offset=4 (local.get $e))))
              (i32.store8 (local.get $o) (i32.const 58))
              (i32.store8 offset=1 (local.get $o) (i32.const 32))
              (local.set $o (i32.add (local.get $o) (i32.const 2)))
              (memory.copy (local.get $o) (i32.load offset=8 (local.get $e)) (i32.load offset=12 (local.get $e)))
              (local.set $o (i32.add (local.get $o) (i32.load offset=12 (local.get $e))))
              (i32.store8 (local.get $o) (i32.const 10))
              (local.set $o (i32.add (local.get $o) (i32.const 1)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $write)))))
      (if (i32.or (local.get $bd) (local.get $dump))
        (then
          (i32.store8 (local.get $o) (i32.const 10))
          (local.set $o (i32.add (local.get $o) (i32.const 1)))))
      (if (i32.and (local.get $bd) (local.get $sized))
        (then
          (local.set $o (i32.add (local.get $o) (call $utoa (local.get $bl) (local.get $o))))
          (local.set $bd (i32.const 0))))
      (if (local.get $bd)
        (then
          (memory.copy (local.get $o) (local.get $bp) (local.get $bl))
          (local.set $o (i32.add (local.get $o) (local.get $bl)))))
      (call $reply (local.get $out) (i32.sub (local.get $o) (local.get $out))))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $end i32) (local $nl i32) (local $dump i32) (local $sized i32) (local $s i32)
      (local $mth i32) (local $mthl i32) (local $url i32) (local $urll i32)
      (local $hdrs i32) (local $hn i32) (local $w i32) (local $we i32) (local $c i32) (local $e i32)
      (local $bd i32) (local $bp i32) (local $bl i32)
      (global.set $sd (local.get $d))
      (global.set $sp (local.get $p))
      (global.set $sl (local.get $l))
      (if (i32.eqz (local.get $ml)) (then (return (call $reply (i32.const 128) (i32.const 17)))))
      (local.set $end (i32.add (local.get $mp) (local.get $ml)))
      (local.set $nl (call $find (local.get $mp) (local.get $end) (i32.const 10)))
      ;; the body: everything after the first "\n", if there is one
      (if (i32.lt_u (local.get $nl) (local.get $end))
        (then
          (local.set $bd (i32.const 1))
          (local.set $bp (i32.add (local.get $nl) (i32.const 1)))
          (local.set $bl (i32.sub (local.get $end) (local.get $bp)))))
      ;; '+': dump the response headers too
      (local.set $s (local.get $mp))
      (if (i32.eq (i32.load8_u (local.get $s)) (i32.const 43))
        (then
          (local.set $dump (i32.const 1))
          (local.set $s (i32.add (local.get $s) (i32.const 1)))))
      ;; '#': the body's size
      (if (i32.eq (i32.load8_u (local.get $s)) (i32.const 35))
        (then
          (local.set $sized (i32.const 1))
          (local.set $s (i32.add (local.get $s) (i32.const 1)))))
      ;; the method, up to the first space
      (local.set $mth (local.get $s))
      (local.set $w (call $find (local.get $s) (local.get $nl) (i32.const 32)))
      (local.set $mthl (i32.sub (local.get $w) (local.get $mth)))
      ;; the URL, up to the next space
      (local.set $url (select (i32.add (local.get $w) (i32.const 1)) (local.get $nl)
                              (i32.lt_u (local.get $w) (local.get $nl))))
      (local.set $w (call $find (local.get $url) (local.get $nl) (i32.const 32)))
      (local.set $urll (i32.sub (local.get $w) (local.get $url)))
      ;; headers: one 16-byte element per remaining word (at most one per byte of the line)
      (local.set $hdrs (call $alloc (i32.shl (i32.add (i32.sub (local.get $nl) (local.get $mp)) (i32.const 1))
                                             (i32.const 4))))
      (block $no-more
        (loop $words
          (br_if $no-more (i32.ge_u (local.get $w) (local.get $nl)))
          (local.set $w (i32.add (local.get $w) (i32.const 1)))          ;; skip the space
          (local.set $we (call $find (local.get $w) (local.get $nl) (i32.const 32)))
          (if (i32.gt_u (local.get $we) (local.get $w))
            (then
              (local.set $c (call $find (local.get $w) (local.get $we) (i32.const 58)))
              (local.set $e (i32.add (local.get $hdrs) (i32.shl (local.get $hn) (i32.const 4))))
              (i32.store (local.get $e) (local.get $w))
              (i32.store offset=4 (local.get $e) (i32.sub (local.get $c) (local.get $w)))
              (i32.store offset=8 (local.get $e)
                (select (i32.add (local.get $c) (i32.const 1)) (local.get $we)
                        (i32.lt_u (local.get $c) (local.get $we))))
              (i32.store offset=12 (local.get $e)
                (select (i32.sub (local.get $we) (i32.add (local.get $c) (i32.const 1))) (i32.const 0)
                        (i32.lt_u (local.get $c) (local.get $we))))
              (local.set $hn (i32.add (local.get $hn) (i32.const 1)))))
          (local.set $w (local.get $we))
          (br $words)))
      (call $send-http (local.get $mth) (local.get $mthl) (local.get $url) (local.get $urll)
                       (local.get $hdrs) (local.get $hn)
                       (local.get $bd) (local.get $bp) (local.get $bl)
                       (global.get $res))
      (if (i32.load8_u (global.get $res)) (then (return (call $err))))
      (call $answer (local.get $dump) (local.get $sized))))

  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "http" (instance (export "send-http" (func $send-http))))))

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
