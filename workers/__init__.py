"""Workers: processes serving one model (base or parity) each over the parm wire protocol.

Data flow: frontend -> worker_client -> [wire: workers.protocol] -> workers.server -> workers.model.
"""
