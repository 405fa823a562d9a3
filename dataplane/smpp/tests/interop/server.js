// A small SMSC built on node-smpp (https://github.com/farhadi/node-smpp),
// used by tests/interop.rs. Prints the listening port on the first stdout
// line. Accepts system_id "smsgw" / password "secret"; answers submit_sm
// with zero-padded upper-case hex ids and, when a receipt is requested,
// sends a delivery receipt (text form with the id in decimal, plus the
// receipted_message_id / message_state TLVs) 50 ms later.
'use strict';
const smpp = require('smpp');

let nextId = 1;
const server = smpp.createServer({ debug: false }, (session) => {
  let bound = false;
  session.on('error', (e) => console.error('session error:', e.message));
  const onBind = (pdu) => {
    if (pdu.system_id !== 'smsgw' || pdu.password !== 'secret') {
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
      return;
    }
    bound = true;
    session.send(pdu.response({ system_id: 'node-smpp' }));
  };
  session.on('bind_transceiver', onBind);
  session.on('bind_transmitter', onBind);
  session.on('bind_receiver', onBind);
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.send(pdu.response());
    session.close();
  });
  session.on('deliver_sm_resp', () => console.error('deliver_sm_resp received'));
  session.on('submit_sm', (pdu) => {
    if (!bound) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
      return;
    }
    const n = nextId++;
    const id = n.toString(16).toUpperCase().padStart(8, '0');
    session.send(pdu.response({ message_id: id }));
    if (pdu.registered_delivery & 0x03) {
      setTimeout(() => {
        session.deliver_sm({
          source_addr: pdu.destination_addr,
          destination_addr: pdu.source_addr,
          esm_class: smpp.ESM_CLASS.MC_DELIVERY_RECEIPT,
          short_message:
            `id:${String(n).padStart(10, '0')} sub:001 dlvrd:001 submit date:2401021530 ` +
            'done date:2401021531 stat:DELIVRD err:000 text:',
          receipted_message_id: id,
          message_state: smpp.MESSAGE_STATE.DELIVERED,
        });
      }, 50);
    }
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(server.address().port);
});
